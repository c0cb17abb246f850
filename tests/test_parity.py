"""The project's pipeline against the authors' released pipeline on the same
tiny random model (tests/data/parity, made with their code at commit 497d163)."""
import numpy as np

from normalcrafter.pipeline import NormalCrafterPipeline


def test_matches_released_pipeline_fp32_cpu(parity_dir):
    pipe = NormalCrafterPipeline.from_pretrained(str(parity_dir / "model"), device="cpu", dtype="fp32")
    frames = np.load(parity_dir / "input.npy")
    ref = np.load(parity_dir / "ref_out.npy")
    out = pipe(frames, window=14, stride=10, decode_chunk=7)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-4
