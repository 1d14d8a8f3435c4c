"""`fluorofpga deploy`: the folder a user copies onto the board."""

import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import fluorofpga.app as facade
from fluorofpga.cli import app as cli
from fluorofpga.host import (
    BundleError,
    default_bundle_path,
    default_sim_bundle_path,
    load_bundle,
    shipped_bundle_path,
)
from fluorofpga.host.bundle import MANIFEST
from fluorofpga.microscope import OutputError

runner = CliRunner()


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def bundle_with_bitstream(tmp_path, hwh=True):
    path = tmp_path / "bundle_bit"
    shutil.copytree(load_bundle().path, path)
    (path / "bitstream").mkdir()
    (path / "bitstream" / "fluorofpga.bit").write_bytes(b"\x00\x09bitstream")
    if hwh:
        (path / "bitstream" / "fluorofpga.hwh").write_text("<MODULES/>")
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"]["bitstream"] = "bitstream/fluorofpga.bit"
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


def test_deploy_writes_bundle_notebooks_package_and_requirements(tmp_path):
    out = tmp_path / "board"
    r = facade.deploy("kv260", out)
    assert listing(out) == ["NO_BITSTREAM.txt", "README.txt", "bundle", "deploy.json",
                            "fluorofpga", "notebooks", "requirements.txt", "sim_bundle"]
    assert load_bundle(out / "sim_bundle").task == "sim"  # the shipped SIM bundle, intact
    assert "built without Vivado" in (out / "NO_BITSTREAM.txt").read_text()
    assert r["note"] and "no bitstream" in r["note"] and not r["bitstream"]
    assert listing(out / "notebooks") == ["1_check_board.ipynb", "2_denoise_live.ipynb",
                                          "3_sim_live.ipynb", "4_benchmark_dma.ipynb"]
    requirements = (out / "requirements.txt").read_text().splitlines()
    assert "numpy<2" in requirements and "tifffile>=2023.1" in requirements
    assert not any(line.startswith(("torch", "pynq", "brevitas", "finn", "qonnx"))
                   for line in requirements)
    record = json.loads((out / "deploy.json").read_text())
    assert record["board"] == "kv260" and record["bundle"] == load_bundle().name
    assert record["sim_bundle"] == "sim3-gat-w4a8"
    assert "fluorofpga/host/pynq_backend.py" in record["package_files"]
    assert not (out / "fluorofpga" / "hw").exists() and not (out / "fluorofpga" / "models").exists()
    assert not (out / "fluorofpga" / "host" / "bundles").exists()  # the bundle is beside
    assert load_bundle(out / "bundle").name == load_bundle().name  # intact copy
    assert [p.name for p in tmp_path.iterdir()] == ["board"]  # no staging left behind


def test_deployed_package_runs_alone_without_the_training_stack(tmp_path):
    out = tmp_path / "board"
    facade.deploy("kv260", out)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import fluorofpga, fluorofpga.app, fluorofpga.cli, fluorofpga.host\n"
        "assert fluorofpga.__file__.startswith(sys.argv[1]), fluorofpga.__file__\n"
        "from fluorofpga.host import load_bundle\n"
        "print(load_bundle(sys.argv[1] + '/bundle').name)\n"
        "heavy = [m for m in ('torch', 'brevitas', 'finn', 'qonnx', 'fluorofpga.hw')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == load_bundle().name


def test_deploy_copies_the_bitstream_and_its_hwh(tmp_path):
    bundle = bundle_with_bitstream(tmp_path)
    r = facade.deploy("kv260", tmp_path / "board", bundle)
    assert r["bitstream"] and r["note"] is None
    assert not (tmp_path / "board" / "NO_BITSTREAM.txt").exists()
    deployed = tmp_path / "board" / "bundle" / "bitstream"
    assert listing(deployed) == ["fluorofpga.bit", "fluorofpga.hwh"]
    (bundle / "bitstream" / "fluorofpga.hwh").unlink()
    with pytest.raises(BundleError, match=".hwh beside it is missing"):
        facade.deploy("kv260", tmp_path / "board2", bundle)
    assert not (tmp_path / "board2").exists()


def test_deploy_checks_everything_before_writing(tmp_path):
    with pytest.raises(ValueError, match="unknown board 'zedboard'; known boards: kv260"):
        facade.deploy("zedboard", tmp_path / "a")
    with pytest.raises(BundleError, match="compiled for kv260, not pynq-z2"):
        facade.deploy("pynq-z2", tmp_path / "a", default_bundle_path())
    with pytest.raises(BundleError, match="compiled for kv260, not ultra96-v2"):
        facade.deploy("ultra96-v2", tmp_path / "a")  # no shipped bundle for that board
    with pytest.raises(BundleError):
        facade.deploy("kv260", tmp_path / "a", tmp_path)  # not a bundle
    with pytest.raises(OutputError, match="does not exist"):
        facade.deploy("kv260", tmp_path / "missing" / "a")
    user = tmp_path / "user"
    user.mkdir()
    (user / "data.tif").write_bytes(b"precious")
    with pytest.raises(OutputError, match="not empty.*--overwrite"):
        facade.deploy("kv260", user)
    with pytest.raises(OutputError, match="not a fluorofpga deploy folder"):
        facade.deploy("kv260", user, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        facade.deploy("kv260", tmp_path / "file")
    assert listing(tmp_path) == ["file", "user"] and listing(user) == ["data.tif"]


def test_overwrite_replaces_an_earlier_deploy_only(tmp_path):
    out = tmp_path / "board"
    facade.deploy("kv260", out)
    (out / "restored.tif").write_bytes(b"from the last run")
    with pytest.raises(OutputError, match="--overwrite"):
        facade.deploy("kv260", out)
    facade.deploy("kv260", out, overwrite=True)
    assert not (out / "restored.tif").exists() and (out / "deploy.json").is_file()
    assert listing(tmp_path) == ["board"]


def test_cli_deploy(tmp_path):
    result = runner.invoke(cli, ["deploy", "--board", "kv260", "--out", str(tmp_path / "b")],
                           env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "4 notebooks" in text and "no bitstream" in text and "1_check_board" in text
    again = runner.invoke(cli, ["deploy", "--board", "kv260", "--out", str(tmp_path / "b")],
                          env={"COLUMNS": "1000"})
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert "Traceback" not in again.output


def test_deploy_sim_model_none_or_a_denoiser_as_sim_model(tmp_path):
    facade.deploy("kv260", tmp_path / "plain", sim_bundle_path="none")
    assert not (tmp_path / "plain" / "sim_bundle").exists()
    with pytest.raises(ValueError, match="not a SIM bundle"):
        facade.deploy("kv260", tmp_path / "x", sim_bundle_path=load_bundle().path)
    with pytest.raises(ValueError, match="not a denoiser"):
        facade.deploy("kv260", tmp_path / "y", bundle_path=default_sim_bundle_path())
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_pynq_z2_gets_its_own_shipped_bundle(tmp_path):
    """The Pynq-Z2's 220 DSPs take a smaller net: the shipped one for that board is
    compiled for it at >= 25 Mpixel/s, bit-exact, and deploy picks it by default."""
    path = shipped_bundle_path("pynq-z2")
    assert path != default_bundle_path() and shipped_bundle_path("kv260") == (
        default_bundle_path())
    bundle = load_bundle(path)
    est = bundle.manifest["estimates"]
    assert bundle.manifest["board"] == est["board"] == "pynq-z2"
    assert est["mpix_per_s"] >= 25 and est["fits"]
    assert bundle.manifest["verification"]["bit_exact"] is True
    r = facade.deploy("pynq-z2", tmp_path / "board", sim_bundle_path="none")
    deployed = json.loads((tmp_path / "board" / "bundle" / MANIFEST).read_text())
    assert deployed["name"] == bundle.name and r["board"] == "pynq-z2"


def xilinx_bit(path, part):
    """A file with a Xilinx .bit header (fields a-e) naming ``part``, and its .hwh."""
    def field(key, value):
        return key + len(value).to_bytes(2, "big") + value

    body = b"\xff" * 64
    path.write_bytes(bytes.fromhex("0009 0ff00ff00ff00ff0 00 0001")
                     + field(b"a", b"top_wrapper;UserID=0XFFFFFFFF;Version=2024.1\0")
                     + field(b"b", part.encode() + b"\0") + field(b"c", b"2026/12/08\0")
                     + field(b"d", b"02:30:00\0") + b"e" + len(body).to_bytes(4, "big") + body)
    path.with_suffix(".hwh").write_text("<MODULES/>")
    return path


def test_deploy_puts_a_bitstream_built_from_compile_into_the_bundle(tmp_path):
    """`deploy --bitstream`: the .bit Vivado wrote from `compile`'s folder goes into the
    deployed bundle with its .hwh and SHA-256; a .bit for another part, without its .hwh, or
    not a bitstream at all is refused before anything is written."""
    built = tmp_path / "out"
    built.mkdir()
    bit = xilinx_bit(built / "fluorofpga.bit", "xck26-sfvc784-2LV-c")
    assert facade.bitstream_part(bit) == "xck26-sfvc784-2LV-c"
    r = facade.deploy("kv260", tmp_path / "board", bitstream_path=bit)
    assert r["bitstream"] and r["note"] is None and r["bitstream_from"] == str(bit)
    deployed = load_bundle(tmp_path / "board" / "bundle")  # its digests check out
    assert deployed.file("bitstream").read_bytes() == bit.read_bytes()
    assert deployed.file("bitstream").with_suffix(".hwh").is_file()
    assert "bitstream" not in load_bundle().manifest["files"]  # the source is untouched
    assert not (tmp_path / "board" / "NO_BITSTREAM.txt").exists()

    z7 = xilinx_bit(tmp_path / "z7.bit", "7z020clg400")  # as Vivado names a Zynq-7020
    with pytest.raises(ValueError, match="part 7z020clg400, the kv260 has xck26"):
        facade.deploy("kv260", tmp_path / "a", bitstream_path=z7)
    junk = tmp_path / "junk.bit"
    junk.write_bytes(b"not a bitstream at all")
    junk.with_suffix(".hwh").write_text("<MODULES/>")
    with pytest.raises(ValueError, match="not a Xilinx .bit file"):
        facade.deploy("kv260", tmp_path / "a", bitstream_path=junk)
    bit.with_suffix(".hwh").unlink()
    with pytest.raises(ValueError, match="fluorofpga.hwh Vivado writes beside it is missing"):
        facade.deploy("kv260", tmp_path / "a", bitstream_path=bit)
    assert not (tmp_path / "a").exists()
    res = runner.invoke(cli, ["deploy", "--board", "kv260", "--out", str(tmp_path / "a"),
                              "--bitstream", str(tmp_path / "nosuch.bit")])
    assert res.exit_code == 2 and "no such .bit file" in res.output
