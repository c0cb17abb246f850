// Flamenco 3 job type: NormalCrafter normals for one shot, one task per chunk.
// Put this file in the "scripts" folder next to the Flamenco Manager and
// restart it. Every worker runs `normalcrafter estimate --frames A:B
// --context N` into one shared output folder; the chunks are cut exactly as
// `normalcrafter farm` cuts them (normalcrafter/chunks.py: cut_points and
// chunk_ranges), where the seam to a single run is smallest.

const JOB_TYPE = {
  label: "NormalCrafter Normals",
  settings: [
    { key: "input", type: "string", subtype: "file_path", required: true,
      description: "Video or image sequence (plate.####.exr) on shared storage" },
    { key: "output", type: "string", subtype: "dir_path", required: true,
      description: "Output folder on shared storage (normal.NNNNN.exr)" },
    { key: "frame_count", type: "int32", required: true,
      description: "Number of frames of the input (normalcrafter farm INPUT -o OUT --plan shows the chunks)" },
    { key: "chunk", type: "int32", default: 210, description: "Frames per task, about" },
    { key: "context", type: "int32", default: 40, description: "Frames of context before each chunk" },
    { key: "model", type: "string", default: "", description: "Model folder readable by every worker (empty: default)" },
    { key: "extra_args", type: "string", default: "", description: "More normalcrafter estimate arguments" },
    { key: "exe", type: "string", default: "normalcrafter", description: "The normalcrafter command on the workers" },
    // The release's algorithm settings; chunks are cut on their grid.
    { key: "window", type: "int32", default: 14, visible: "hidden" },
    { key: "stride", type: "int32", default: 10, visible: "hidden" },
    { key: "decode_chunk", type: "int32", default: 7, visible: "hidden" },
  ],
};

// Ends of the clip's windows (starts 0, stride, ...; one last window ending
// on the last frame when needed).
function windowEnds(n, window, stride) {
  const w = Math.min(window, n);
  const ends = [];
  for (let s = 0; s + w <= n; s += stride) ends.push(s + w);
  if (ends[ends.length - 1] < n) ends.push(n);
  return ends;
}

// Where a chunk may start with the smallest seam: a window end on the decode grid.
function cutPoints(n, window, stride, decodeChunk) {
  const points = windowEnds(n, window, stride).filter((e) => e < n && e % decodeChunk === 0);
  if (points.length > 0) return points;
  const grid = [];
  for (let p = decodeChunk; p < n; p += decodeChunk) grid.push(p);
  return grid;
}

// Chunks of about `chunk` frames; the last one takes the rest, up to 1.5 chunks.
function chunkRanges(n, chunk, window, stride, decodeChunk) {
  const points = cutPoints(n, window, stride, decodeChunk);
  const bounds = [0];
  while (n - bounds[bounds.length - 1] > 1.5 * chunk) {
    const prev = bounds[bounds.length - 1];
    const later = points.filter((p) => p > prev);
    if (later.length === 0) break;
    let best = later[0];
    for (const p of later) {
      if (Math.abs(p - prev - chunk) < Math.abs(best - prev - chunk)) best = p;
    }
    bounds.push(best);
  }
  bounds.push(n);
  const ranges = [];
  for (let i = 0; i + 1 < bounds.length; i++) ranges.push([bounds[i], bounds[i + 1]]);
  return ranges;
}

function compileJob(job) {
  const s = job.settings;
  if (s.frame_count < 1) throw "frame_count must be at least 1";
  const common = ["-o", s.output, "--context", String(s.context), "-q",
                  "--window", String(s.window), "--stride", String(s.stride),
                  "--decode-chunk", String(s.decode_chunk)];
  if (s.model) common.push("--model", s.model);
  const extra = s.extra_args ? s.extra_args.split(" ").filter((a) => a.length > 0) : [];
  for (const [a, b] of chunkRanges(s.frame_count, s.chunk, s.window, s.stride, s.decode_chunk)) {
    const task = author.Task(`normals-${a}-${b}`, "misc");
    task.addCommand(author.Command("exec", {
      exe: s.exe,
      args: ["estimate", s.input, "--frames", `${a}:${b}`].concat(common, extra),
    }));
    job.addTask(task);
  }
}
