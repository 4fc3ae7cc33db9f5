#!/usr/bin/env python3
"""Unit test of check_includes.py: planted violations are reported, allowed
includes are not, and the exit status says which."""
import os
import subprocess
import sys
import tempfile
import unittest

CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check_includes.py")


def run(files):
    """Runs the checker on a scratch tree holding `files` (path -> text)."""
    with tempfile.TemporaryDirectory() as root:
        for path, text in files.items():
            full = os.path.join(root, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                f.write(text)
        r = subprocess.run([sys.executable, CHECKER, root], capture_output=True, text=True)
        return r.returncode, r.stdout.splitlines()


class CheckIncludes(unittest.TestCase):
    def test_allowed_directions_pass(self):
        code, out = run({
            "ir/DSV3/Ops.cpp": '#include "ir/DSV3/Ops.h"\n#include "mlir/IR/Builders.h"\n',
            "passes/P.cpp": '#include "ir/DSV3/Ops.h"\n',
            "lowering/L.cpp": '#include "passes/Passes.h"\n#include "ir/Codegen/CodegenDialect.h"\n',
            "runtime/io/F.cpp": '#include "runtime/support/Error.h"\n#include <vector>\n',
            "runtime/jit/J.cpp": '#include "mlir/ExecutionEngine/ExecutionEngine.h"\n',
            "frontends/tools/d.cpp": '#include "runtime/io/F.h"\n#include "lowering/L.h"\n',
        })
        self.assertEqual((code, out), (0, []))

    def test_planted_violations_are_reported(self):
        code, out = run({
            "ir/DSV3/Bad.cpp": '// a dialect file\n#include "runtime/abi/Abi.h"\n',
            "passes/Bad.cpp": '#  include "lowering/Pipeline/Pipelines.h"\n',
            "runtime/train/Bad.cpp": '#include "frontends/model/ModelConfig.h"\n'
                                     '#include "llvm/Support/Error.h"\n',
            "runtime/jit/Bad.cpp": '#include "ir/DSV3/DSV3Dialect.h"\n',
            "ir/DSV3/Target.cpp": '#include "ir/Codegen/CodegenDialect.h"\n',
            "ir/Codegen/Model.cpp": '#include "ir/DSV3/DSV3Dialect.h"\n',
            "passes/Kernel.cpp": '#include "ir/Codegen/CodegenDialect.h"\n',
        })
        self.assertEqual(code, 1)
        self.assertEqual(sorted(line.split(" (")[0] for line in out), [
            "ir/Codegen/Model.cpp:1: ir/Codegen must not include ir/DSV3/DSV3Dialect.h",
            "ir/DSV3/Bad.cpp:2: ir/DSV3 must not include runtime/abi/Abi.h",
            "ir/DSV3/Target.cpp:1: ir/DSV3 must not include ir/Codegen/CodegenDialect.h",
            "passes/Bad.cpp:1: passes must not include lowering/Pipeline/Pipelines.h",
            "passes/Kernel.cpp:1: passes must not include ir/Codegen/CodegenDialect.h",
            "runtime/jit/Bad.cpp:1: runtime/jit must not include ir/DSV3/DSV3Dialect.h",
            "runtime/train/Bad.cpp:1: runtime must not include frontends/model/ModelConfig.h",
            "runtime/train/Bad.cpp:2: runtime must not include llvm/Support/Error.h",
        ])


if __name__ == "__main__":
    unittest.main()
