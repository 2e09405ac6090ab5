"""routescript.testing.scenario - `routescript test`: YAML scenarios that test a route script in
process (the real compiled script and modules; a simulated network and a virtual clock), or against a
live server (--target). docs/testing-scripts.md teaches the file format.

    from routescript.testing.scenario import load_file, run_files
    results = run_files(["examples/presence.test.yaml"])
"""

from .model import ScenarioFile
from .reader import load_file
from .runner import ERROR, FAILED, PASSED, SKIPPED, ScenarioResult, run_files, run_in_process
from .yamlread import ScenarioError

__all__ = ["ERROR", "FAILED", "PASSED", "SKIPPED", "ScenarioError", "ScenarioFile", "ScenarioResult",
           "load_file", "run_files", "run_in_process"]
