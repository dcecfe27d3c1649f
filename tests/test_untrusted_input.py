"""Nothing from an input file reaches a shell, `eval`, or a deserializer that runs code.

Input files are parsed by numpy/scipy/h5py only, in a child process whose results come back as
JSON plus raw float32 bytes (`sandbox/`); record ids and paths travel as strings and are
written only as JSON data or TFRecord bytes (`test_hostile_inputs.py` runs hostile file names end
to end). This test reads the package's source and fails on any call that could execute data.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "beam_pipeline").rglob("*.py"), *(REPO / "ecg_common").rglob("*.py"), *(REPO / "ecg_decode").rglob("*.py"),
                  *(REPO / "trainer").rglob("*.py")])
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "os.system", "os.popen", "pickle.load", "pickle.loads",
                   "dill.load", "dill.loads", "marshal.loads", "shelve.open", "yaml.load", "cloudpickle.loads",
                   "np.load", "numpy.load", "scipy.io.loadmat"}
ALLOWED = {("container.py", "scipy.io.loadmat")}  # the one parser of v4/v5 files, called on bytes, never unpickling


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _findings(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name in FORBIDDEN_CALLS and (path.name, name) not in ALLOWED:
            found.append(f"{path.name}:{node.lineno} calls {name}")
        for keyword in node.keywords:
            if keyword.arg in ("shell", "allow_pickle") and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                found.append(f"{path.name}:{node.lineno} passes {keyword.arg}=")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_call_can_execute_input(path):
    assert _findings(path) == []


def test_the_scan_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os, pickle, subprocess, numpy as np\neval(x)\npickle.loads(b)\n"
                   "subprocess.run(c, shell=True)\nnp.load(f, allow_pickle=True)\nos.system(c)\n")
    assert len(_findings(bad)) == 6  # np.load counts twice: the call and allow_pickle


def test_matlab_cells_and_objects_stay_inert_data():
    """loadmat has no option that evaluates data: cells, structs and MATLAB objects come back as numpy
    object arrays, which the decoder refuses as `bad_dtype` without looking inside."""
    import hostile_files as hf
    import numpy as np

    from ecg_common.rejections import Reason
    from ecg_decode.decoding.decode import decode_record

    result = decode_record(hf.savemat_bytes({"data": np.array([{"a": 1}], dtype=object)}))
    assert result.reason == Reason.BAD_DTYPE
