#!/usr/bin/env python3
"""Checks that #include directives follow the project's layering.

Dependencies run one way: frontends -> compiler (ir, passes, lowering) ->
runtime. The rules below name, for each layer (a folder prefix), the include
prefixes it must never use; the most specific layer wins. Prints one line per
violation (`<file>:<line>: <layer> must not include <header> (<why>)`) and
exits 1 if there is any.

  check_includes.py SOURCE_ROOT
"""
import os
import re
import sys

# (layer, forbidden include prefixes, why). Longest matching layer applies.
RULES = [
    ("ir/", ("passes/", "lowering/", "runtime/", "frontends/", "bench/"),
     "the dialect knows no transformation, target or runtime"),
    # The model dialect and the codegen (kernel-call) dialect are independent.
    ("ir/DSV3/", ("ir/Codegen/", "passes/", "lowering/", "runtime/", "frontends/", "bench/"),
     "the model dialect knows no target or code generation"),
    ("ir/Codegen/", ("ir/DSV3/", "passes/", "lowering/", "runtime/", "frontends/", "bench/"),
     "the codegen dialect knows no model"),
    ("passes/", ("ir/Codegen/", "lowering/", "runtime/", "frontends/", "bench/"),
     "dsv3-level passes know no target, runtime or file format"),
    ("lowering/", ("frontends/", "runtime/", "bench/"),
     "lowering emits calls by name; it links no runtime"),
    ("runtime/", ("frontends/", "passes/", "lowering/", "ir/", "mlir/", "llvm/",
                  "bench/"),
     "the runtime core builds without LLVM/MLIR and knows no compiler"),
    # The in-process JIT is the one runtime folder built on LLVM's ORC: it
    # may include MLIR/LLVM, still never the compiler's own layers.
    ("runtime/jit/", ("frontends/", "passes/", "lowering/", "ir/", "bench/"),
     "the JIT executes LLVM modules; it knows no dialect or frontend"),
]

SOURCE_SUFFIXES = (".h", ".hpp", ".cpp", ".cc", ".td", ".def", ".inc")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')


def layer_of(path):
    best = None
    for layer, forbidden, why in RULES:
        if path.startswith(layer) and (best is None or len(layer) > len(best[0])):
            best = (layer, forbidden, why)
    return best


def violations(root):
    for top in sorted({rule[0].split("/")[0] for rule in RULES}):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for name in sorted(files):
                if not name.endswith(SOURCE_SUFFIXES):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                rule = layer_of(rel)
                if rule is None:
                    continue
                layer, forbidden, why = rule
                with open(full, encoding="utf-8", errors="replace") as f:
                    for number, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if m and m.group(1).startswith(forbidden):
                            yield (f"{rel}:{number}: {layer.rstrip('/')} must not include "
                                   f"{m.group(1)} ({why})")


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        print("usage: check_includes.py SOURCE_ROOT", file=sys.stderr)
        return 2
    found = list(violations(sys.argv[1]))
    for v in found:
        print(v)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
