// The input side's seam: the table of checkpoint formats that
// `read_checkpoint` tries in order. To read a new format, add
// src/formats/<name>.cc defining one `SourceFormat`, and one line to the
// table in src/formats/registry.cc; every command then reads it.
#pragma once

#include <string>
#include <vector>

#include "ckpt/graph.h"

namespace ckpt {

struct Checkpoint;
struct ReadOptions;

// One format a checkpoint can be in.
struct SourceFormat {
  // Its name: "torch-zip", "torch-legacy" (`Checkpoint::format`).
  const char* name;
  // What reports print as `format` ("zip", "legacy"; the `format` enums of
  // docs/report.schema.json and docs/check.schema.json).
  const char* report_name;
  // The format in words, for the error on a file no format claims:
  // "a zip archive"; nullptr leaves it out of that error (the HF index,
  // which only a JSON file naming `weight_map` could be).
  const char* described;
  // True when `file` (every byte of the file at `path`; read only what is
  // needed from its start) is in this format. May throw `Error` to refuse a
  // file it recognises but does not read (a tar-format torch file), naming
  // `path` and the cause.
  bool (*sniff)(const std::string& path, ByteSpan file);
  // Reads the file into `out`, whose `path` and `bytes` (every byte of it)
  // are set: the graph, each `Storage` bound to its bytes in `out.bytes` and
  // to the file they lie in (`out.mapped()`),
  // `pickle_record`, `pickle_bytes`, `storage_records` and `facts`. The
  // caller then collects `out.tensors`. Throws `Error` naming
  // `path`[:record][@byte] and the cause.
  // A reader of several files (the HF index) calls the other readers once
  // per file on its own `out`: it appends the file's map to `out.files` and
  // sets `out.bytes` to it first, so `out.mapped()` is that file, and takes
  // what each made in `out.graph` (`graph.root`, new storages) before
  // calling the next; the records a reader sets are then the last file's.
  void (*read)(const std::string& path, Checkpoint& out);
  // For a format that is a folder of files (a DeepSpeed run, a DCP
  // checkpoint, HF shards): true when `folder` is one, judged by the files in
  // it, never by its name, and by the options given (DeepSpeed's `--tag`).
  // Then `read` is called with the folder's path and an `out` with no file
  // mapped (`out.bytes` empty): it maps what it reads into `out.files`.
  // nullptr for a format of single files. May throw `Error` for a folder it
  // recognises but refuses, naming the folder and the cause.
  bool (*claims_folder)(const std::string& folder, const ReadOptions& options) = nullptr;
  // For a folder format, when `folder` is not one but looks like one left
  // incomplete (a DeepSpeed run without `latest`, DCP shards without their
  // `.metadata`): what is missing and what to do, for the error on a folder
  // nothing reads. Empty otherwise; nullptr for formats that never explain.
  std::string (*explain_folder)(const std::string& folder) = nullptr;
};

// The formats `read_checkpoint` tries, in order; the first whose `sniff` is
// true reads the file.
const std::vector<SourceFormat>& source_formats();

// The folder format (a DeepSpeed run, a DCP checkpoint) that claims the
// folder `path`, or nullptr: then `read_checkpoint` reads it through the HF
// index in it. Throws `Error` as `claims_folder` does.
const SourceFormat* folder_format(const std::string& path, const ReadOptions& options);

}  // namespace ckpt
