"""A plain whole-clip implementation of the released algorithm, written
independently of the streaming pipeline: everything in memory, one list of
windows, the release's `pred = cat(pred[:, :start], latents)` bookkeeping,
one decode at the end. The streaming pipeline must reproduce it."""
import numpy as np
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing


def release_windows(n, window, stride):
    ses = [[i, i + window] for i in range(0, n, stride)]
    ses = [se for se in ses if se[1] <= n]
    if ses[-1][1] < n:
        ses.append([n - window, n])
    return ses


@torch.no_grad()
def reference_normals(components, frames, window=14, stride=10, chunk=7):
    c = components
    f, h, w, _ = frames.shape
    ph, pw = -h % 64, -w % 64
    padded = np.pad(frames, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), constant_values=255)
    x = torch.from_numpy(padded).permute(0, 3, 1, 2).float() / 255
    size = c.image_encoder.config.image_size
    y = (_resize_with_antialiasing(x * 2 - 1, (size, size)) + 1) / 2
    mean = torch.tensor(c.feature_extractor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(c.feature_extractor.image_std).view(1, 3, 1, 1)
    emb = torch.cat([c.image_encoder((y[i : i + chunk] - mean) / std).image_embeds for i in range(0, f, chunk)])[:, None]
    lat = torch.cat([c.vae.encode(x[i : i + chunk] * 2 - 1).latent_dist.mode() for i in range(0, f, chunk)])[None]
    window = min(window, f)
    sched = c.scheduler
    pred = None
    ses = release_windows(f, window, stride)
    for k, (s, e) in enumerate(ses):
        sched.set_timesteps(1)
        t = sched.timesteps[0]
        z = torch.zeros(1, e - s, 4, *lat.shape[-2:])
        n = 0 if k == 0 or stride == window else ses[k - 1][1] - s
        if n:
            z[:, :n] = pred[:, -n:]
        inp = torch.cat([sched.scale_model_input(z, t), lat[:, s:e]], dim=2)
        v = c.unet(inp, t, encoder_hidden_states=emb[s:e], added_time_ids=torch.tensor([[7.0, 127.0, 0.0]]))[0]
        out = sched.step(v, t, z).prev_sample
        if n:
            wts = torch.linspace(1, 0, n + 2)[1:-1].view(1, n, 1, 1, 1)
            out[:, :n] = pred[:, -n:] * wts + out[:, :n] * (1 - wts)
        pred = out if pred is None else torch.cat([pred[:, :s], out], dim=1)
    z = pred[0] / c.vae.config.scaling_factor
    img = torch.cat([c.vae.decode(z[i : i + chunk], num_frames=len(z[i : i + chunk])).sample for i in range(0, f, chunk)])
    img = ((img / 2 + 0.5).clamp(0, 1) * 2 - 1)[:, :, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
    return img.permute(0, 2, 3, 1).numpy()
