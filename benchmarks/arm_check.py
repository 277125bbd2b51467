"""Arm correctness check: the int8 students' predictions on Arm kernels (qemu-user) against x86, on a seeded sample.

    python benchmarks/arm_check.py --setup --root /tmp/arm/root          # build the arm64 root once (~1-3 min)
    python benchmarks/arm_check.py --root /tmp/arm/root --run runs/minilm-rotten-tomatoes --out arm.json
    python benchmarks/arm_check.py --root /tmp/arm/root --model A.onnx --model B.tflite --ids ids.npz --out arm.json

Correctness only, never timing: emulation is far slower than native and not proportional across runtimes.
The same inference file (benchmarks/arm_infer.py) runs twice on the same token ids: under
``qemu-aarch64-static -cpu cortex-a76`` with a Debian bookworm arm64 python and the aarch64 wheels of onnxruntime /
ai-edge-litert (so their Arm NEON/dot-product kernels run), and with the host python. ORT's cpuinfo crashes on the
host's x86 /proc/cpuinfo, so the emulated process runs inside ``unshare -m`` with a fake Arm cpuinfo bind-mounted
(root needed). The JSON names per model: argmax agreement, max |logit difference|, n and platform.machine() as the
emulated python saw it (aarch64). Exit status 1 when a model's agreement is below --threshold or a logit is not
finite; 2 on a usage or setup problem. int8 logits differ slightly from x86 (benchmarks/results/*-arm-check.json),
which shows the Arm kernels ran.

With --run, the models are the run's int8-dynamic ONNX student and any int8 .tflite student, found through the
manifests of the stage folders named in run.json; the texts are a seeded sample of its test split, tokenised with
each model's own tokenizer. Explicit --model files take --ids (pre-tokenised rows: real_ids / real_offsets, e.g. a
bench inputs.npz) or --tokenizer (a folder with tokenizer.json) with the run's test texts or --texts FILE.jsonl.
"""

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekd.artifacts import read_manifest, stage_outputs  # noqa: E402
from edgekd.errors import AssetError, ConfigError, DataError, EdgekdError  # noqa: E402

log = logging.getLogger("arm_check")
INFER = Path(__file__).resolve().with_name("arm_infer.py")
QEMU, CPU, ARM_PYTHON = "qemu-aarch64-static", "cortex-a76", "usr/bin/python3.11"
SITE = "usr/local/lib/python3.11/dist-packages"  # where --setup puts the aarch64 wheels (PYTHONPATH of the arm side)
WHEELS = ("onnxruntime==1.31.1", "numpy", "ai-edge-litert==2.3.0")
# One Cortex-A76 core as /proc/cpuinfo shows it on arm64 Linux (what ORT's cpuinfo library parses).
FAKE_CPUINFO = ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
                "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                "CPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log.info("$ %s", shlex.join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"{name} not installed: apt-get install qemu-user-static debootstrap")
    return path


def setup(root: Path, mirror: str) -> None:
    """Build the arm64 root when parts are missing: debootstrap's first stage (enough to extract python3.11 without a
    second stage), the downloaded .debs unpacked with dpkg-deb -x, the aarch64 wheels pip-installed into SITE."""
    need_tool(QEMU)
    if not (root / ARM_PYTHON).exists():
        if not (root / "debootstrap").is_dir():
            _run([need_tool("debootstrap"), "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3",
                  "bookworm", str(root), mirror])
        debs = sorted((root / "var/cache/apt/archives").glob("*.deb"))
        log.info("$ for deb in %s/var/cache/apt/archives/*.deb; do dpkg-deb -x $deb %s; done  (%d packages)",
                 root, root, len(debs))
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    site = root / SITE
    # bookworm's glibc is 2.36: any manylinux tag up to it runs (ai-edge-litert 2.3.0 ships manylinux_2_27 only).
    platforms = [a for tag in ("manylinux_2_28", "manylinux_2_27", "manylinux2014")
                 for a in ("--platform", f"{tag}_aarch64")]
    if not all(any(site.glob(f"{w.split('==')[0].replace('-', '_')}*")) for w in WHEELS):
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(site), *platforms,
              "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:", *WHEELS])
    log.info("arm64 root ready: %s", root)


def check_root(root: Path) -> None:
    need_tool(QEMU)
    for tool in ("unshare", "mount"):
        need_tool(tool)
    if not (root / ARM_PYTHON).exists() or not (root / SITE).is_dir():
        raise ConfigError(f"{root}: no arm64 root with {ARM_PYTHON} and {SITE}; build it with --setup --root {root}")


def run_models(run_dir: Path) -> list[dict]:
    """The int8-dynamic ONNX student and int8 .tflite students of the stages run.json lists (the latest run)."""
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else None
    if info is None:
        raise AssetError(f"{run_dir}: no run.json (not a finished edgekd run directory)")
    found = []
    for stage in info.get("stages", []):
        folder = run_dir / stage["folder"]
        for name, art in stage_outputs(folder, read_manifest(folder) or {}).items():
            int8_onnx = art.type == "onnx" and art.precision == "int8-dynamic"
            int8_tflite = art.type == "tflite" and (art.precision or "").startswith("int8")
            if art.role == "student" and (int8_onnx or int8_tflite):
                found.append({"name": name, "path": str(art.path.resolve()), "pad_id": art.pad_id or 0,
                              "tokenizer": str(art.tokenizer) if art.tokenizer else None})
    if not any(m["path"].endswith(".onnx") for m in found):
        raise AssetError(f"{run_dir}/run.json: no stage lists an int8-dynamic ONNX student (run a quantize stage)")
    return found


def test_texts(run_dir: Path | None, texts_file: Path | None) -> list[str]:
    """--texts FILE.jsonl ({"text": ...} per line), else the run's test split (its data stage's test.jsonl)."""
    if texts_file is None:
        if run_dir is None:
            raise ConfigError("--tokenizer needs texts: give --run or --texts FILE.jsonl (or give --ids instead)")
        texts_file = run_dir / json.loads((run_dir / "run.json").read_text())["data"] / "test.jsonl"
    texts = [json.loads(line)["text"] for line in texts_file.read_text().splitlines() if line.strip()]
    if not texts:
        raise DataError(f"{texts_file}: no texts")
    return texts


def save_rows(rows: list[list[int]], path: Path) -> Path:
    offsets = np.cumsum([0] + [len(r) for r in rows])
    np.savez(path, real_ids=np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]), real_offsets=offsets)
    return path


def tokenised(tokenizer_dir: str, texts: list[str], max_length: int) -> list[list[int]]:
    from tokenizers import Tokenizer

    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        raise AssetError(f"{path}: missing (a tokenizer folder holds tokenizer.json)")
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return [e.ids for e in tok.encode_batch(texts)]


def sampled_ids(path: Path, n: int, seed: int) -> list[list[int]]:
    with np.load(path) as data:
        if "real_ids" not in data or "real_offsets" not in data:
            raise DataError(f"{path}: needs real_ids and real_offsets (the rows, concatenated, and their offsets)")
        rows = np.split(data["real_ids"], data["real_offsets"][1:-1])
    pick = np.random.default_rng(seed).permutation(len(rows))[:n]
    return [rows[i].tolist() for i in pick]


def infer(cmd: list[str], models: list[dict], out_dir: Path, threads: int, timeout: float, env: dict) -> dict:
    """Run arm_infer.py (``cmd`` = the python to run it with); logits per model name and the side's info.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    job = out_dir / "job.json"
    job.write_text(json.dumps({"threads": threads, "models": models}))
    full = [*cmd, str(INFER), "--job", str(job), "--out-dir", str(out_dir)]
    log.info("$ %s", shlex.join(full))
    done = subprocess.run(full, env=env, timeout=timeout, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()
        raise AssetError(f"{out_dir.name} inference failed: {lines[-1][:400]}")
    info = json.loads((out_dir / "info.json").read_text())
    info["logits"] = {m["name"]: np.load(out_dir / f"{i}.npz")["logits"] for i, m in enumerate(models)}
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path(os.environ.get("EDGEKD_ARM_ROOT", "/tmp/arm/root")),
                   help="the arm64 Debian root (default $EDGEKD_ARM_ROOT or /tmp/arm/root)")
    p.add_argument("--setup", action="store_true", help="build the root's missing parts first (needs network)")
    p.add_argument("--mirror", default="http://deb.debian.org/debian", help="Debian mirror for --setup")
    p.add_argument("--run", type=Path, help="an edgekd run directory: its int8 students and its test texts")
    p.add_argument("--model", type=Path, action="append", default=[], help=".onnx/.ort/.tflite file (repeatable)")
    p.add_argument("--ids", type=Path, help="token ids for the --model files: .npz with real_ids and real_offsets")
    p.add_argument("--tokenizer", type=Path, help="tokenizer folder for the --model files (instead of --ids)")
    p.add_argument("--texts", type=Path, help="texts for --tokenizer: .jsonl with a 'text' field (default: the run's)")
    p.add_argument("--pad-id", type=int, default=0, help="pad id of the --model files (bucketed .tflite pads)")
    p.add_argument("--max-length", type=int, default=None, help="truncate texts (default: the run's, else 128)")
    p.add_argument("-n", "--samples", type=int, default=200, help="texts in the seeded sample (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    p.add_argument("--threshold", type=float, default=0.99, help="least argmax agreement per model (default 0.99)")
    p.add_argument("--host-python", default=sys.executable, help="x86 python with onnxruntime (and ai-edge-litert "
                   "for .tflite models); default: this one")
    p.add_argument("--threads", type=int, default=1, help="runtime threads on both sides (default 1)")
    p.add_argument("--timeout", type=float, default=3000, help="seconds allowed to the emulated side (default 3000)")
    p.add_argument("--out", type=Path, help="result JSON; its logits and ids go to OUT's name + .work/")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        if args.setup:
            setup(args.root.resolve(), args.mirror)
            if args.run is None and not args.model:
                return 0
        return check(args)
    except EdgekdError as exc:
        log.error("error: %s", exc)
        return 2
    except subprocess.TimeoutExpired as exc:
        log.error("error: %s took longer than --timeout %.0f s", shlex.join(map(str, exc.cmd)), exc.timeout)
        return 2
    except subprocess.CalledProcessError as exc:
        log.error("error: %s failed with exit status %d", shlex.join(map(str, exc.cmd)), exc.returncode)
        return 2


def check(args: argparse.Namespace) -> int:
    root = args.root.resolve()
    check_root(root)
    if args.out is None or (args.run is None and not args.model):
        raise ConfigError("give --out and --run and/or --model (see --help)")
    max_length = args.max_length
    if max_length is None and args.run is not None:
        max_length = json.loads((args.run / "run.json").read_text())["pipeline"]["model"].get("max_length")
    max_length = max_length or 128
    models = run_models(args.run) if args.run is not None else []
    for path in args.model:
        if not path.is_file():
            raise AssetError(f"{path}: no such model file")
        tokenizer = args.tokenizer or (path.parent if (path.parent / "tokenizer.json").is_file() else None)
        models.append({"name": path.name, "path": str(path.resolve()), "pad_id": args.pad_id,
                       "tokenizer": None if args.ids else str(tokenizer) if tokenizer else None})
        if args.ids is None and tokenizer is None:
            raise ConfigError(f"{path}: no token ids for it: give --ids or --tokenizer")
    names = [m["name"] for m in models]
    for i, m in enumerate(models):  # unique names (two files called model.onnx): suffix the later ones
        m["name"] += f"#{i}" if names.count(m["name"]) > 1 else ""
    work = args.out.parent / (args.out.stem + ".work")
    work.mkdir(parents=True, exist_ok=True)
    # Token ids per model: one seeded sample of texts, each model with its own tokenizer (or the --ids rows).
    texts = None
    for i, m in enumerate(models):
        tokenizer = m.pop("tokenizer")
        if tokenizer is None:
            rows = sampled_ids(args.ids, args.samples, args.seed)
        else:
            texts = texts or test_texts(args.run, args.texts)
            pick = np.random.default_rng(args.seed).permutation(len(texts))[: args.samples]
            rows = tokenised(tokenizer, [texts[j] for j in pick], max_length)
        m["ids"] = str(save_rows(rows, work / f"ids-{i}.npz"))
    return compare(args, root, models, work)


def compare(args: argparse.Namespace, root: Path, models: list[dict], work: Path) -> int:
    """Both sides on the same ids, then agreement / max |delta| per model into the JSON; 1 if any model fails."""
    fake = work / "cpuinfo"
    fake.write_text(FAKE_CPUINFO)
    # The arm side: a private mount namespace, so the fake cpuinfo is seen by this process only.
    inner = (f"mount --bind {shlex.quote(str(fake))} /proc/cpuinfo && exec {shlex.quote(need_tool(QEMU))} "
             f"-cpu {CPU} -L {shlex.quote(str(root))} {shlex.quote(str(root / ARM_PYTHON))} \"$@\"")
    arm_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": f"{root / SITE}",
               "OMP_NUM_THREADS": str(args.threads), "HOME": str(work)}
    # x86 first: it is quick, and a model the host cannot run fails before the slow emulated pass.
    host = infer([args.host_python], models, work / "x86", args.threads, args.timeout,
                 {**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    arm = infer(["unshare", "-m", "--", "sh", "-c", inner, "sh"], models, work / "arm", args.threads,
                args.timeout, arm_env)
    results, ok = {}, True
    for m in models:
        a, x = arm["logits"][m["name"]], host["logits"][m["name"]]  # [n, classes] each
        finite = bool(np.isfinite(a).all() and np.isfinite(x).all())
        agreement = float((a.argmax(1) == x.argmax(1)).mean())
        results[m["name"]] = {"path": m["path"], "n": int(len(a)), "agreement": round(agreement, 6),
                              "max_abs_logit_diff": float(np.abs(a - x).max()), "finite": finite,
                              "arm_platform": arm["machine"]}
        passed = finite and agreement >= args.threshold and arm["machine"] == "aarch64"
        ok = ok and passed
        log.info("%s: agreement %.4f, max |dlogit| %.3g, n %d on %s: %s", m["name"], agreement,
                 results[m["name"]]["max_abs_logit_diff"], len(a), arm["machine"], "ok" if passed else "FAILED")
    qemu_version = subprocess.run([need_tool(QEMU), "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    report = {"machine": {"host": platform.machine(), "host_versions": host["versions"],
                          "arm": {"platform": arm["machine"], "emulator": f"{qemu_version} -cpu {CPU}",
                                  "root": str(root), "versions": arm["versions"]}},
              "sample": {"n": args.samples, "seed": args.seed}, "threshold": args.threshold, "ok": ok,
              "models": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
