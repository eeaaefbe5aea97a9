// Location tags as torch.load restores them (location.h), and the lock and
// sweep of temporary files (temp_file.h) that a killed conversion leaves.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "ckpt/location.h"
#include "test_util.h"

namespace ckpt {
namespace {

TEST(LocationTag, TorchRestoresTheseTags) {
  for (const char* tag : {"cpu", "meta", "mps", "cuda", "cuda:0", "cuda:15", "xpu", "xpu:1", "hpu",
                          "hpu:0"}) {
    EXPECT_EQ(location_tag_problem(tag), "") << tag;
  }
}

TEST(LocationTag, TorchCannotRestoreThese) {
  for (const char* tag : {"", "gpu0", "Cuda:0", "cuda:", "cuda:x", "cuda:01", "cuda:-1", "cudax",
                          "cpu:0", " cpu", "mps:0", "meta:0", "tpu"}) {
    EXPECT_EQ(location_tag_problem(tag),
              "torch.load does not know how to restore location '" + std::string(tag) +
                  "' (it restores cpu, cuda, cuda:N, mps, meta, xpu[:N], hpu[:N])")
        << tag;
  }
}

TEST(LocationTag, OptionSuggestsTheLowerCaseSpelling) {
  EXPECT_NO_THROW(check_location_option("keep"));
  EXPECT_NO_THROW(check_location_option("cuda:1"));
  EXPECT_EQ(test::format_error_of([] { check_location_option("CUDA:1"); }),
            "Error: invalid --location 'CUDA:1': expected keep or a tag torch restores: cpu, "
            "cuda, cuda:N, mps, meta, xpu[:N], hpu[:N], did you mean 'cuda:1'?");
  EXPECT_EQ(test::format_error_of([] { check_location_option("gpu0"); }),
            "Error: invalid --location 'gpu0': expected keep or a tag torch restores: cpu, cuda, "
            "cuda:N, mps, meta, xpu[:N], hpu[:N] (torch.load could not restore it without "
            "map_location)");
}

TEST(LocationTag, UnavailableHereForDevicesThisMachineLacks) {
  EXPECT_EQ(location_unavailable_here("cpu"), "");
  EXPECT_EQ(location_unavailable_here("meta"), "");
  EXPECT_EQ(location_unavailable_here("mps"),
            "location 'mps' is a device this machine does not have");
  EXPECT_NE(location_unavailable_here("gpu0"), "");
}

}  // namespace
}  // namespace ckpt
