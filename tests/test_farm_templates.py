"""The Flamenco job type (JavaScript, run here by Node) cuts chunks exactly as
``normalcrafter farm`` does and runs ``normalcrafter estimate`` per chunk."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from normalcrafter.chunks import chunk_ranges

JOB_TYPE = Path(__file__).parents[1] / "docs" / "farm" / "flamenco" / "normalcrafter.js"

# Flamenco's compiler API, as far as the job type uses it, recording the tasks.
HARNESS = r"""
const fs = require("fs");
const tasks = [];
const author = {
  Task: (name, type) => ({ name, type, commands: [], addCommand(c) { this.commands.push(c); } }),
  Command: (kind, params) => ({ kind, ...params }),
};
const { JOB_TYPE, compileJob } = new Function(
  "author", fs.readFileSync(process.argv[2], "utf8") + "\nreturn { JOB_TYPE, compileJob };")(author);
for (const settings of JSON.parse(process.argv[3])) {
  const job = { settings: { ...Object.fromEntries(JOB_TYPE.settings.map((s) => [s.key, s.default])), ...settings },
                addTask: (t) => tasks.push(t) };
  tasks.length = 0;
  compileJob(job);
  console.log(JSON.stringify(tasks));
}
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the Flamenco job type")
def test_flamenco_job_type_cuts_like_the_farm(tmp_path):
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    cases = [(1000, 140, 14, 10, 7), (3000, 210, 14, 10, 7), (30, 10, 14, 10, 7), (5, 210, 14, 10, 7),
             (400, 50, 8, 6, 5), (40, 10, 13, 10, 4)]
    jobs = [{"input": "/plates/a.####.exr", "output": "/out/a", "frame_count": n, "chunk": c, "window": w,
             "stride": s, "decode_chunk": d, "model": "/models/nc", "extra_args": "--max-res 512"}
            for n, c, w, s, d in cases]
    out = subprocess.run(["node", str(harness), str(JOB_TYPE), json.dumps(jobs)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    for (n, c, w, s, d), line in zip(cases, out, strict=True):
        tasks = json.loads(line)
        ranges = chunk_ranges(n, c, w, s, d)
        assert [t["name"] for t in tasks] == [f"normals-{a}-{b}" for a, b in ranges]
        for task, (a, b) in zip(tasks, ranges):
            (cmd,) = task["commands"]
            assert cmd["kind"] == "exec" and cmd["exe"] == "normalcrafter"
            args = cmd["args"]
            assert args[:4] == ["estimate", "/plates/a.####.exr", "--frames", f"{a}:{b}"]
            assert args[args.index("--context") + 1] == "40" and args[args.index("--model") + 1] == "/models/nc"
            assert args[-2:] == ["--max-res", "512"]
