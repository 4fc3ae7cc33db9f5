# lit configuration for the dsv3 IR tests (mirrors the source tree).
import os

import lit.formats
from lit.llvm import llvm_config

config.name = "DSV3"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.dsv3_obj_root, "tests", "lit")
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py", "Inputs"]
config.environment["FILECHECK_OPTS"] = "--enable-var-scope"
config.substitutions.append(("%models", os.path.join(config.dsv3_src_root, "models")))
config.substitutions.append(("%golden", os.path.join(config.dsv3_src_root, "tests", "golden")))

llvm_config.use_default_substitutions()
llvm_config.add_tool_substitutions(
    ["dsv3-opt", "dsv3c", "not", "count"], [config.dsv3_tools_dir, config.llvm_tools_dir])
