// Proving an output checkpoint: it reopens, decodes to the graph that was
// meant to be written, every tensor equals its source byte for byte, every
// record's CRC-32 holds, and on a device other than the CPU every tensor
// loads there through LibTorch.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ckpt/bytes.h"
#include "ckpt/graph.h"
#include "ckpt/reread_behind.h"
#include "ckpt/storage_pieces.h"
#include "ckpt/tensor.h"
#include "ckpt/writer.h"

namespace ckpt {

struct VerifyReport {
  size_t tensors = 0;          // tensors compared
  size_t storages = 0;         // storages compared
  uint64_t bytes = 0;          // storage bytes compared
  size_t device_checked = 0;   // tensors checked on `device` (on cpu: compared in place)
  std::string device;
};

// Throws the `Error` of a failed verification (exit status "verification
// failed"): `<path>: verification failed: <what>`.
[[noreturn]] void verification_failed(const std::string& path, const std::string& what);

// The input the sources were read from, for messages. (Each source storage
// says which file its bytes are in: `storage_bytes`.)
struct VerifySource {
  std::string path;     // the input file
  std::string records;  // its storage records' prefix: `in.pth:archive/data/`
  // When set, the CRC-32s of the input bytes that verification reads beside
  // the output are noted here (WriteRequest::source_reads).
  ReadLog* reads = nullptr;
  // When set, what the writer read of the input, sorted, inside records
  // whose CRC-32s are checked after verification (WriteRequest::proven_reads):
  // a storage read from them needs only its output reread.
  const ReadLog* proven = nullptr;
  // When set, the casts the writer checked as it wrote them (CastCheck).
  const CastCheck* checked = nullptr;
  // When set, the CRC-32s of the output's ranges reread behind the writer
  // (waited for): a storage whose exact range it noted is not read again.
  const RereadBehind* reread = nullptr;
};

// Throws the `Error` for an input record whose bytes (as read while
// verifying) do not match the CRC-32 it carries: the input was damaged after
// it was saved, and the output would carry the damage on.
[[noreturn]] void input_record_damaged(const VerifySource& input, const Storage& source);

// True when the writer compared `source`'s cast with the reference as it
// wrote it (VerifySource::checked) from bytes proven to be the input's: its
// record's CRC-32 (a mismatch throws input_record_damaged), or runs of
// records checked after verification (VerifySource::proven: a ZeRO run's).
// Then the output alone needs rereading.
bool cast_checked_as_written(const VerifySource& input, const Storage& source);

// Checks the archive at `path` against `sources` (the tensors of the root
// that was encoded into it, in pickle order): our reader decodes it to a
// graph that encodes to the same pickle bytes; the tensors match in dtype,
// size, stride and offset, storages are shared exactly as in the sources,
// and each storage holds its source's bytes and its record's CRC-32 (checked
// against the CRC-32 of the input record when it has one, else byte for
// byte); on a device other than the CPU each
// tensor copied there and back equals its source. Storages are streamed in
// chunks, so memory stays flat whatever their size. Throws `Error` with exit
// status "verification failed" naming `shown_as` (the final name of the
// file) and the first difference. `progress`, when set, hears ("verify",
// bytes done, bytes total). A storage whose bytes fail the CRC-32 copied
// from its input record is the input's defect: an `Error` (bad input) naming
// `input.records` + key, as is an input that shrinks while it is reread.
// `pickle` is the data.pkl that was written (the encoding of the root).
// A source storage in `casts` was written cast (writer.h): its tensors must
// read back with its new dtype, and its bytes equal its source's cast again
// by a second implementation (src/verify/reference_cast.h): read again
// beside the output, unless the writer checked it as it cast
// (VerifySource::checked) and the source bytes it read are proven by the CRC-32 of their
// record (VerifySource::proven for pieces); then the output alone is reread.
VerifyReport verify_output(
    const std::vector<TensorRef>& sources, const std::string& pickle, const std::string& path,
    const std::string& shown_as, const std::string& device, const VerifySource& input,
    const ProgressFn& progress = {}, const StorageCasts& casts = {});

// The CastCheck a verified write with `--dtype` is made with: verification's
// reference cast (src/verify/reference_cast.h), not the writer's code.
CastCheck reference_cast_check();

}  // namespace ckpt
