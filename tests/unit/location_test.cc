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
#include "ckpt/temp_file.h"
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

class TempFolder : public ::testing::Test {
protected:
  void SetUp() override {
    char pattern[] = "/tmp/ckpt-temp-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    m_dir = pattern;
  }
  void TearDown() override { std::system(("rm -rf " + m_dir).c_str()); }

  std::string write(const std::string& name, size_t bytes) {
    std::string path = m_dir + "/" + name;
    std::ofstream(path) << std::string(bytes, 'x');
    return path;
  }
  static bool exists(const std::string& path) {
    struct stat s {};
    return ::stat(path.c_str(), &s) == 0;
  }

  std::string m_dir;
};

TEST_F(TempFolder, TempFileIsLockedWhileWritten) {
  TempFile temp(m_dir + "/out.pth");
  int other = ::open(temp.path().c_str(), O_RDONLY);
  ASSERT_GE(other, 0);
  EXPECT_NE(::flock(other, LOCK_EX | LOCK_NB), 0);  // another open file description
  ::close(other);
  StaleTempFiles removed = remove_stale_temp_files(m_dir);
  EXPECT_EQ(removed.files, 0u);
  EXPECT_TRUE(exists(temp.path()));
}

TEST_F(TempFolder, SweepRemovesOnlyUnheldTemporariesOfOurNaming) {
  std::string stale = write(".a.pth.tmp-Ab3xYz", 1000);
  std::string held = write(".b.pth.tmp-Qw9rTy", 10);
  std::string not_ours = write(".a.pth.tmp-short", 10);  // five characters after tmp-
  std::string output = write("a.pth", 10);
  int holder = ::open(held.c_str(), O_RDONLY);
  ASSERT_EQ(::flock(holder, LOCK_EX), 0);
  StaleTempFiles removed = remove_stale_temp_files(m_dir);
  ::close(holder);
  EXPECT_EQ(removed.files, 1u);
  EXPECT_EQ(removed.bytes, 1000u);
  EXPECT_FALSE(exists(stale));
  EXPECT_TRUE(exists(held));
  EXPECT_TRUE(exists(not_ours));
  EXPECT_TRUE(exists(output));
}

TEST_F(TempFolder, CommittedTempFileIsTheDestination) {
  {
    TempFile temp(m_dir + "/out.pth");
    ASSERT_EQ(::write(temp.fd(), "abc", 3), 3);
    temp.commit();
  }
  std::ifstream in(m_dir + "/out.pth");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "abc");
  EXPECT_EQ(remove_stale_temp_files(m_dir).files, 0u);
}

}  // namespace
}  // namespace ckpt
