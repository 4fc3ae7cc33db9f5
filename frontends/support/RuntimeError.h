//===- RuntimeError.h - runtime-core errors as llvm::Error ------*- C++ -*-===//
//
// The compiler side reports errors with llvm::Error; the runtime core, which
// links no LLVM, with rt::Error. These adapters convert at the boundary and
// give the compiler side the same one-line `<file>: <problem>` form.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_FRONTENDS_SUPPORT_RUNTIMEERROR_H
#define DSV3_FRONTENDS_SUPPORT_RUNTIMEERROR_H

#include "runtime/support/Error.h"
#include "runtime/support/File.h"

#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"

namespace dsv3 {

inline llvm::Error toLLVMError(rt::Error e) {
  if (!e)
    return llvm::Error::success();
  return llvm::createStringError(e.message());
}

template <class T> llvm::Expected<T> toLLVMExpected(rt::Expected<T> value) {
  if (!value)
    return toLLVMError(value.takeError());
  return std::move(*value);
}

/// The one-line `<file>: <problem>` error of the whole project.
inline llvm::Error makeFileError(llvm::StringRef file, const llvm::Twine &problem) {
  return toLLVMError(rt::fileError(file.str(), problem.str()));
}

/// Maps a regular file of at most maxBytes (rt::mapInputFile).
inline llvm::Expected<rt::MappedFile> readInputFile(llvm::StringRef path, uint64_t maxBytes) {
  return toLLVMExpected(rt::mapInputFile(path.str(), maxBytes));
}

} // namespace dsv3

#endif // DSV3_FRONTENDS_SUPPORT_RUNTIMEERROR_H
