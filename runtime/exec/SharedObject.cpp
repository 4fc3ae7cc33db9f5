//===- SharedObject.cpp - running an ahead-of-time artifact ---------------===//
#include "runtime/exec/SharedObject.h"

#include "runtime/support/File.h"

#include <dlfcn.h>

namespace dsv3::rt {

Expected<std::unique_ptr<SharedObjectExecutable>>
SharedObjectExecutable::open(const std::string &dir) {
  std::string manifestPath = dir + "/manifest.json";
  Expected<MappedFile> text = mapInputFile(manifestPath, 64 << 20);
  if (!text)
    return text.takeError();
  Expected<Manifest> manifest = parseManifest(std::string(text->text()), manifestPath);
  if (!manifest)
    return manifest.takeError();
  std::string library = dir + "/model.so";
  void *handle = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = ::dlerror();
    return fileError(library, why ? why : "cannot load");
  }
  std::unique_ptr<SharedObjectExecutable> exe(
      new SharedObjectExecutable(std::move(*manifest), handle));
  for (size_t i = 0; i < exe->entries().size(); ++i) {
    std::string symbol = "_dsv3_packed_" + exe->entries()[i].name;
    void *fn = ::dlsym(handle, symbol.c_str());
    if (!fn)
      return fileError(library, "does not export " + symbol + " (manifest and code disagree)");
    exe->setPacked(i, reinterpret_cast<PackedEntry>(fn));
  }
  return exe;
}

SharedObjectExecutable::~SharedObjectExecutable() {
  if (handle)
    ::dlclose(handle);
}

} // namespace dsv3::rt
