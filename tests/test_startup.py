"""Start-up: a command imports only what its store URL needs (issue 12's budget).

In a fresh interpreter, as a deploy or a flow run starts snapsync: a push and a pull to a
``file://`` store leave no cloud SDK, fsspec, obstore, asyncio, pyfastcdc or tqdm in
``sys.modules``; to S3 (SeaweedFS) only obstore, never s3fs/botocore/aiohttp. (Time is not
asserted: this machine is too noisy; see the benchmarks' start-up rows.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from servers import SeaweedS3

HEAVY = ("fsspec", "obstore", "s3fs", "boto3", "botocore", "aiobotocore", "gcsfs", "adlfs",
         "aiohttp", "azure", "google", "asyncio", "pyfastcdc", "tqdm")

SCRIPT = """
import json, sys
from snapsync.cli import main
codes = [main(a) for a in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def run(commands: list[list[str]]) -> tuple[list[int], set[str]]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(commands)],
                         capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["codes"], set(got["modules"])


def project(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    for i in range(20):
        (src / "pkg" / f"m{i}.py").write_text(f"x = {i}\n")
    return src


def test_file_store_imports_no_cloud_code(tmp_path: Path) -> None:
    src = project(tmp_path)
    url = (tmp_path / "store").as_uri()
    codes, mods = run([["push", "-q", str(src), url], ["push", "-q", str(src), url],
                       ["pull", "-q", url, str(tmp_path / "out")]])
    assert codes == [0, 0, 0]
    assert not mods & set(HEAVY), sorted(mods & set(HEAVY))


def test_s3_store_imports_obstore_only(tmp_path: Path, s3_bucket: str,
                                       s3_server: SeaweedS3) -> None:
    src = project(tmp_path)
    url = f"{s3_bucket}/startup"
    opts = [a for k, v in s3_server.storage_options.items()
            for a in ("-o", f"{k}={json.dumps(v) if not isinstance(v, str) else v}")]
    codes, mods = run([["push", "-q", str(src), url, *opts],
                       ["push", "-q", str(src), url, *opts]])
    assert codes == [0, 0]
    assert "obstore" in mods
    assert not mods & (set(HEAVY) - {"obstore", "asyncio"}), sorted(mods & set(HEAVY))
