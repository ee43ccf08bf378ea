"""`python -m e4ecli` (and `torchrun ... -m e4ecli`) started in the folder that holds the clone, when the clone
itself is named `e4ecli`: Python takes the clone's folder for a namespace package `e4ecli` (the current folder
comes first on sys.path, before the editable install's finder) and runs this file as its `__main__`.
Hand over to the real package inside the clone. Not part of the installed package."""
import os
import runpy
import sys

_clone = os.path.dirname(os.path.abspath(__file__))
if not os.path.isfile(os.path.join(_clone, "e4ecli", "__init__.py")):
    sys.exit(f"{_clone}: the e4ecli package folder is missing from this clone")
for _name in [m for m in sys.modules if m == "e4ecli" or m.startswith("e4ecli.")]:
    del sys.modules[_name]
sys.path.insert(0, _clone)
runpy.run_module("e4ecli", run_name="__main__", alter_sys=True)
