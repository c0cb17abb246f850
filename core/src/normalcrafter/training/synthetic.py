"""Procedural training clips: a batched analytic ray caster in torch.

Each clip is a room (the inside of a box: floor, ceiling, four walls) holding
up to 11 primitives (ellipsoids, oriented boxes, capped cylinders) with
procedural textures, lit by one or two point lights with hard shadows, a
Blinn-Phong highlight and a sky-like ambient term, seen by a moving pinhole
camera while some objects move and spin. Rays are intersected in closed form
(no marching), so every pixel's normal is exact.

Scene parameters are drawn on the CPU (the same clips for a seed on any
device); the per-pixel work runs on the chosen device. World space has +Y up.
Normals are returned in camera space, OpenGL convention "RUB" (+X right, +Y
up, +Z toward the viewer), always facing the camera.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Object slots by type; inactive slots never hit.
N_ELLIPSOID, N_BOX, N_CYLINDER = 4, 4, 3
N_OBJECTS = N_ELLIPSOID + N_BOX + N_CYLINDER
N_SURFACES = N_OBJECTS + 6  # objects, then the room's walls (-x, +x, -y, +y, -z, +z)
N_LIGHTS = 2
EPS = 1e-4
FAR = 1e6


@dataclass
class Clips:
    """``rgb``: (B, F, 3, H, W) in [0, 1], quantised to 8 bits as a video would
    be. ``normal``: (B, F, 3, H, W) unit camera-space normals, RUB. ``flow``
    (only when asked for): (B, F-1, H, W, 2) exact forward motion in pixels
    (x, y) of each pixel's surface point from frame t to t+1, NaN where it
    leaves the picture or is hidden in t+1."""

    rgb: torch.Tensor
    normal: torch.Tensor
    flow: torch.Tensor | None = None


def _rand(gen: torch.Generator | None, *shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=gen)


def _random_rotation(gen: torch.Generator | None, n: int) -> torch.Tensor:
    """(n, 3, 3) uniformly random rotations (from normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=gen)
    q = q / q.norm(dim=-1, keepdim=True)
    return _quat_to_matrix(q)


def _quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


def _axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices for unit ``axis`` (..., 3) and ``angle`` (...)."""
    half = angle / 2
    q = torch.cat([torch.cos(half)[..., None], axis * torch.sin(half)[..., None]], dim=-1)
    return _quat_to_matrix(q)


def sample_scenes(num_clips: int, num_frames: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per-frame scene parameters of ``num_clips`` clips, on the CPU, leading
    dims (B, F)."""
    g, B, F = generator, num_clips, num_frames
    t = torch.arange(F, dtype=torch.float32).view(1, F, 1)
    room = torch.stack([_rand(g, B, lo=2.5, hi=7.0), _rand(g, B, lo=2.2, hi=4.5), _rand(g, B, lo=2.5, hi=7.0)], -1)

    # Objects: resting on the floor or floating, random size, orientation and motion.
    K = N_OBJECTS
    size = _rand(g, B, K, 3, lo=0.2, hi=1.3) * room.min(dim=-1).values.view(B, 1, 1) / 3.0
    round_ = (torch.rand(B, K, generator=g) < 0.4).float()[..., None]
    size = round_ * size[..., :1] + (1 - round_) * size  # some ellipsoids are spheres, some boxes cubes
    size[:, N_ELLIPSOID + N_BOX:, 2] = size[:, N_ELLIPSOID + N_BOX:, 0]  # cylinders: round cross-section
    centre = torch.stack([
        _rand(g, B, K, lo=-0.8, hi=0.8) * room[:, None, 0],
        _rand(g, B, K, lo=0.0, hi=0.9) * room[:, None, 1] * 2,
        _rand(g, B, K, lo=-0.8, hi=0.8) * room[:, None, 2],
    ], -1)
    on_floor = torch.rand(B, K, generator=g) < 0.6
    centre[..., 1] = torch.where(on_floor, size[..., 1] * 0.9, centre[..., 1])
    active = torch.rand(B, K, generator=g) < 0.65
    rot0 = _random_rotation(g, B * K).view(B, K, 3, 3)
    moving = (torch.rand(B, K, 1, generator=g) < 0.4).float()
    velocity = moving * torch.randn(B, K, 3, generator=g) * 0.03
    spin_axis = torch.nn.functional.normalize(torch.randn(B, K, 3, generator=g), dim=-1)
    spin = moving[..., 0] * torch.randn(B, K, generator=g) * 0.05
    obj_centre = centre[:, None] + velocity[:, None] * t[..., None]
    obj_rot = _axis_angle(spin_axis[:, None].expand(B, F, K, 3), spin[:, None] * t) @ rot0[:, None]

    # Camera: a smooth path inside the room with a little hand-held shake.
    lo = torch.stack([-room[:, 0] + 0.4, torch.full((B,), 0.3), -room[:, 2] + 0.4], -1)
    hi = torch.stack([room[:, 0] - 0.4, room[:, 1] * 2 - 0.3, room[:, 2] - 0.4], -1)
    eye0 = lo + (hi - lo) * torch.rand(B, 3, generator=g)
    eye_v = torch.randn(B, 3, generator=g) * torch.tensor([0.06, 0.02, 0.06]) * (torch.rand(B, 1, generator=g) < 0.85)
    shake_f = _rand(g, B, 3, lo=0.2, hi=0.9)
    shake_p = _rand(g, B, 3, hi=2 * math.pi)
    shake_a = _rand(g, B, 1, hi=0.04)
    eye = eye0[:, None] + eye_v[:, None] * t + shake_a[:, None] * torch.sin(shake_f[:, None] * t + shake_p[:, None])
    eye = torch.maximum(torch.minimum(eye, hi[:, None]), lo[:, None])
    focus = obj_centre[torch.arange(B), 0, torch.randint(0, K, (B,), generator=g)]
    target0 = focus + torch.randn(B, 3, generator=g) * 0.5
    target_v = torch.randn(B, 3, generator=g) * 0.04
    target = target0[:, None] + target_v[:, None] * t
    # No object may hold or graze the camera's path (a clip of one flat colour teaches nothing).
    reach = size.norm(dim=-1) + 0.3
    active = active & ((eye[:, :, None] - obj_centre).norm(dim=-1).amin(1) > reach)
    fov = _rand(g, B, lo=math.radians(35), hi=math.radians(75))
    roll = torch.randn(B, generator=g) * math.radians(4)

    # Lights near the ceiling; the ambient term is brighter from above.
    light_pos = torch.stack([
        _rand(g, B, N_LIGHTS, lo=-0.8, hi=0.8) * room[:, None, 0],
        room[:, None, 1] * 2 * _rand(g, B, N_LIGHTS, lo=0.6, hi=0.95),
        _rand(g, B, N_LIGHTS, lo=-0.8, hi=0.8) * room[:, None, 2],
    ], -1)
    light_col = _rand(g, B, N_LIGHTS, 3, lo=0.7, hi=1.0) * _rand(g, B, N_LIGHTS, 1, lo=6.0, hi=22.0)
    light_col[:, 1:] *= (torch.rand(B, N_LIGHTS - 1, 1, generator=g) < 0.6).float()
    ambient = _rand(g, B, 1, lo=0.08, hi=0.35) * _rand(g, B, 3, lo=0.8, hi=1.0)

    # Materials: two colours mixed by a pattern (solid, checker, stripes, waves).
    S = N_SURFACES
    colour_a = _rand(g, B, S, 3, lo=0.05, hi=0.95)
    colour_b = _rand(g, B, S, 3, lo=0.05, hi=0.95)
    pattern = torch.randint(0, 4, (B, S), generator=g)
    scale = torch.exp(_rand(g, B, S, lo=math.log(0.8), hi=math.log(12.0)))
    direction = torch.nn.functional.normalize(torch.randn(B, S, 3, 3, generator=g), dim=-1)
    phase = _rand(g, B, S, 3, hi=2 * math.pi)
    specular = _rand(g, B, S, hi=0.6)
    shininess = torch.exp(_rand(g, B, S, lo=math.log(8.0), hi=math.log(128.0)))
    exposure = _rand(g, B, lo=0.8, hi=1.6)

    def per_frame(x: torch.Tensor) -> torch.Tensor:
        return x[:, None].expand(B, F, *x.shape[1:])

    return {
        "room": per_frame(room), "obj_centre": obj_centre, "obj_rot": obj_rot, "obj_size": per_frame(size),
        "obj_active": per_frame(active), "eye": eye, "target": target, "fov": per_frame(fov),
        "roll": per_frame(roll), "light_pos": per_frame(light_pos), "light_col": per_frame(light_col),
        "ambient": per_frame(ambient), "colour_a": per_frame(colour_a), "colour_b": per_frame(colour_b),
        "pattern": per_frame(pattern), "scale": per_frame(scale), "direction": per_frame(direction),
        "phase": per_frame(phase), "specular": per_frame(specular), "shininess": per_frame(shininess),
        "exposure": per_frame(exposure),
    }


# -- closed-form intersections in each object's local frame --------------------
# o, d: (V, K, N, 3) local ray origins/directions; s: (V, K, 1, 3) half sizes.
# Each returns the nearest t > EPS, or FAR for a miss.

def _nearest_root(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    disc = b * b - 4 * a * c
    root = torch.sqrt(disc.clamp_min(0))
    t0 = (-b - root) / (2 * a)
    t1 = (-b + root) / (2 * a)
    t = torch.where(t0 > EPS, t0, t1)
    return torch.where((disc >= 0) & (t > EPS), t, torch.full_like(t, FAR))


def _hit_ellipsoid(o: torch.Tensor, d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    os_, ds = o / s, d / s
    return _nearest_root((ds * ds).sum(-1), 2 * (os_ * ds).sum(-1), (os_ * os_).sum(-1) - 1)


def _safe(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)


def _hit_box(o: torch.Tensor, d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    inv = 1.0 / _safe(d)
    t1, t2 = (-s - o) * inv, (s - o) * inv
    t_near = torch.minimum(t1, t2).amax(-1)
    t_far = torch.maximum(t1, t2).amin(-1)
    t = torch.where(t_near > EPS, t_near, t_far)
    return torch.where((t_far >= t_near) & (t > EPS), t, torch.full_like(t, FAR))


def _hit_cylinder(o: torch.Tensor, d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    r, h = s[..., 0], s[..., 1]
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = d.unbind(-1)
    side = _nearest_root(dx * dx + dz * dz + 1e-12, 2 * (ox * dx + oz * dz), ox * ox + oz * oz - r * r)
    side = torch.where((oy + side * dy).abs() <= h, side, torch.full_like(side, FAR))
    best = side
    for sign in (-1.0, 1.0):
        tc = (sign * h - oy) / _safe(dy)
        px, pz = ox + tc * dx, oz + tc * dz
        ok = (tc > EPS) & (px * px + pz * pz <= r * r)
        best = torch.minimum(best, torch.where(ok, tc, torch.full_like(tc, FAR)))
    return best


def _hit_objects(origin: torch.Tensor, direction: torch.Tensor, sc: dict[str, torch.Tensor]) -> torch.Tensor:
    """(V, K, N) hit distances for world rays origin (V, N|1, 3), direction (V, N, 3)."""
    c, R, s = sc["obj_centre"], sc["obj_rot"], sc["obj_size"][:, :, None]
    o = torch.einsum("vnj,vkji->vkni", origin, R) - torch.einsum("vkj,vkji->vki", c, R)[:, :, None]
    d = torch.einsum("vnj,vkji->vkni", direction, R)
    e, b = N_ELLIPSOID, N_ELLIPSOID + N_BOX
    t = torch.cat([
        _hit_ellipsoid(o[:, :e], d[:, :e], s[:, :e]),
        _hit_box(o[:, e:b], d[:, e:b], s[:, e:b]),
        _hit_cylinder(o[:, b:], d[:, b:], s[:, b:]),
    ], dim=1)
    return torch.where(sc["obj_active"][..., None], t, torch.full_like(t, FAR))


def _local_normal(p: torch.Tensor, s: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """Outward normals (V, N, 3) at local hit points ``p`` of objects of half
    size ``s`` and type ``kind`` (0 ellipsoid, 1 box, 2 cylinder)."""
    ellipsoid = p / (s * s)
    q = p.abs() / s
    axis = q.argmax(-1, keepdim=True)
    box = torch.zeros_like(p).scatter(-1, axis, torch.sign(p.gather(-1, axis)))
    radial = torch.sqrt(p[..., 0] ** 2 + p[..., 2] ** 2) / s[..., 0]
    cap = (p[..., 1].abs() / s[..., 1]) > radial
    side = torch.stack([p[..., 0], torch.zeros_like(p[..., 0]), p[..., 2]], -1)
    cap_n = torch.stack([torch.zeros_like(p[..., 0]), torch.sign(p[..., 1]), torch.zeros_like(p[..., 0])], -1)
    cylinder = torch.where(cap[..., None], cap_n, side)
    k = kind[..., None]
    n = torch.where(k == 0, ellipsoid, torch.where(k == 1, box, cylinder))
    return torch.nn.functional.normalize(n, dim=-1)


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (V, K, ...) picked per ray by idx (V, N) -> (V, N, ...)."""
    flat = idx.reshape(idx.shape[0], -1, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, flat)


def _camera(sc: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right, up and back unit vectors (V, 3) of each view."""
    fwd = torch.nn.functional.normalize(sc["target"] - sc["eye"], dim=-1)
    world_up = torch.tensor([0.0, 1.0, 0.0], device=fwd.device).expand_as(fwd)
    right = torch.nn.functional.normalize(torch.cross(fwd, world_up, dim=-1), dim=-1)
    up = torch.cross(right, fwd, dim=-1)
    cr, sr = torch.cos(sc["roll"])[:, None], torch.sin(sc["roll"])[:, None]
    return cr * right + sr * up, -sr * right + cr * up, -fwd


def _pattern(p: torch.Tensor, sc: dict[str, torch.Tensor], surf: torch.Tensor) -> torch.Tensor:
    """Texture mix factor in [0, 1] of points ``p`` (V, N, 3) on surfaces ``surf``."""
    scale = _gather(sc["scale"], surf)[..., None]
    dirs = _gather(sc["direction"], surf)  # (V, N, 3, 3)
    phase = _gather(sc["phase"], surf)
    q = p * scale
    checker = (torch.floor(q).sum(-1) % 2 + 2) % 2
    waves = torch.sin(torch.einsum("vnc,vnkc->vnk", q, dirs) * 2.0 + phase)
    stripes = (waves[..., 0] > 0).float()
    smooth = 0.5 + 0.5 * waves[..., 1] * waves[..., 2]
    kind = _gather(sc["pattern"], surf)
    zero = torch.zeros_like(checker)
    return torch.where(kind == 0, zero, torch.where(kind == 1, checker, torch.where(kind == 2, stripes, smooth)))


def _render_views(sc: dict[str, torch.Tensor], height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """rgb and camera-space normals (V, 3, H, W) of flattened views, and per
    ray (V, H*W) the hit point, surface index and depth (for the flow)."""
    V, dev = sc["eye"].shape[0], sc["eye"].device
    right, up, back = _camera(sc)
    tan = torch.tan(sc["fov"] / 2)[:, None]
    ys = (1 - (torch.arange(height, device=dev) + 0.5) / height * 2).view(height, 1).expand(height, width)
    xs = ((torch.arange(width, device=dev) + 0.5) / width * 2 - 1).view(1, width).expand(height, width)
    u = xs.reshape(1, -1) * tan * (width / height)
    v = ys.reshape(1, -1) * tan
    d = torch.nn.functional.normalize(-back[:, None] + u[..., None] * right[:, None] + v[..., None] * up[:, None], dim=-1)
    eye = sc["eye"][:, None]

    # Room: the ray leaves the box through the nearest far slab.
    room = sc["room"]
    centre = torch.stack([torch.zeros_like(room[:, 0]), room[:, 1], torch.zeros_like(room[:, 0])], -1)[:, None]
    ds = _safe(d)
    t_far = (torch.where(ds > 0, 1.0, -1.0) * room[:, None] + centre - eye) / ds
    t_room, wall_axis = t_far.min(-1)
    wall_sign = torch.sign(d.gather(-1, wall_axis[..., None]))[..., 0]
    wall_normal = torch.zeros_like(d).scatter(-1, wall_axis[..., None], -wall_sign[..., None])
    wall_id = N_OBJECTS + 2 * wall_axis + (wall_sign > 0).long()

    t_obj, k = _hit_objects(eye, d, sc).min(1)
    hit_obj = t_obj < t_room
    t = torch.where(hit_obj, t_obj, t_room)
    p = eye + t[..., None] * d

    R = _gather(sc["obj_rot"], k)  # (V, N, 3, 3)
    p_local = torch.einsum("vnj,vnji->vni", p - _gather(sc["obj_centre"], k), R)
    kind = torch.bucketize(k, torch.tensor([N_ELLIPSOID, N_ELLIPSOID + N_BOX], device=dev), right=True)
    n_obj = torch.einsum("vnij,vnj->vni", R, _local_normal(p_local, _gather(sc["obj_size"], k), kind))
    n = torch.where(hit_obj[..., None], n_obj, wall_normal)
    n = torch.where(((n * d).sum(-1) > 0)[..., None], -n, n)
    surf = torch.where(hit_obj, k, wall_id)
    tex_p = torch.where(hit_obj[..., None], p_local, p)

    mix = _pattern(tex_p, sc, surf)[..., None]
    albedo = _gather(sc["colour_a"], surf) * (1 - mix) + _gather(sc["colour_b"], surf) * mix
    ks = _gather(sc["specular"], surf)[..., None]
    shin = _gather(sc["shininess"], surf)[..., None]
    colour = albedo * sc["ambient"][:, None] * (0.55 + 0.45 * n[..., 1:2])
    p_off = p + n * 1e-3
    for li in range(N_LIGHTS):
        to_light = sc["light_pos"][:, li][:, None] - p_off
        dist = to_light.norm(dim=-1, keepdim=True)
        ldir = to_light / dist
        blocked = (_hit_objects(p_off, ldir, sc) < dist[..., 0][:, None]).any(1)
        lit = (~blocked).float()[..., None]
        radiance = sc["light_col"][:, li][:, None] / (1.0 + dist * dist)
        diffuse = albedo * (n * ldir).sum(-1, keepdim=True).clamp_min(0)
        half = torch.nn.functional.normalize(ldir - d, dim=-1)
        spec = ks * (n * half).sum(-1, keepdim=True).clamp_min(0) ** shin
        colour = colour + lit * radiance * (diffuse + spec)
    colour = 1 - torch.exp(-colour * sc["exposure"][:, None, None])
    rgb = colour.clamp(0, 1) ** (1 / 2.2)

    n_cam = torch.stack([(n * right[:, None]).sum(-1), (n * up[:, None]).sum(-1), (n * back[:, None]).sum(-1)], -1)
    to_image = lambda x: x.transpose(1, 2).reshape(V, 3, height, width)  # noqa: E731
    hits = {"point": p, "surface": surf, "depth": ((p - eye) * -back[:, None]).sum(-1)}
    return to_image(rgb), to_image(torch.nn.functional.normalize(n_cam, dim=-1)), hits


def _project(sc: dict[str, torch.Tensor], points: torch.Tensor, height: int, width: int):
    """Pixel coordinates (x, y) (V, N, 2) and depth (V, N) of world points."""
    right, up, back = _camera(sc)
    rel = points - sc["eye"][:, None]
    depth = -(rel * back[:, None]).sum(-1)
    tan = torch.tan(sc["fov"] / 2)[:, None]
    u = (rel * right[:, None]).sum(-1) / depth / (tan * width / height)
    v = (rel * up[:, None]).sum(-1) / depth / tan
    return torch.stack([(u + 1) / 2 * width - 0.5, (1 - v) / 2 * height - 0.5], -1), depth


def _flow(cur: dict, nxt: dict, hits: dict, next_depth: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Forward flow (V, H, W, 2) of views ``cur`` to views ``nxt``: each hit
    point moves with its object (walls stay), is projected into the next view
    and kept where that view sees it (no nearer surface at the landing pixel)."""
    p, surf = hits["point"], hits["surface"]
    k = surf.clamp(max=N_OBJECTS - 1)
    local = torch.einsum("vnj,vnji->vni", p - _gather(cur["obj_centre"], k), _gather(cur["obj_rot"], k))
    moved = torch.einsum("vnij,vnj->vni", _gather(nxt["obj_rot"], k), local) + _gather(nxt["obj_centre"], k)
    p_next = torch.where((surf < N_OBJECTS)[..., None], moved, p)
    xy, depth = _project(nxt, p_next, height, width)
    V = p.shape[0]
    grid = torch.stack(torch.meshgrid(torch.arange(width, device=p.device), torch.arange(height, device=p.device),
                                      indexing="xy"), -1).reshape(1, -1, 2).float()
    inside = (depth > 0) & (xy[..., 0] >= 0) & (xy[..., 0] <= width - 1) & (xy[..., 1] >= 0) & (xy[..., 1] <= height - 1)
    landing = xy.round().long()
    idx = landing[..., 1].clamp(0, height - 1) * width + landing[..., 0].clamp(0, width - 1)
    seen = next_depth.gather(1, idx) >= depth * 0.99 - 1e-3
    flow = torch.where((inside & seen)[..., None], xy - grid, torch.full_like(xy, float("nan")))
    return flow.reshape(V, height, width, 2)


def render_clips(
    num_clips: int,
    num_frames: int,
    height: int,
    width: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    views_per_pass: int = 64,
    with_flow: bool = False,
) -> Clips:
    """Render ``num_clips`` random clips of ``num_frames`` frames.
    ``generator`` (a CPU generator) fixes the scenes; None uses torch's global
    RNG. ``views_per_pass`` bounds memory."""
    B, F = num_clips, num_frames
    scenes = sample_scenes(B, F, generator)
    flat = {k: v.reshape(B * F, *v.shape[2:]).to(device) for k, v in scenes.items()}
    rgbs, normals, hits = [], [], []
    for start in range(0, B * F, views_per_pass):
        part = {k: v[start : start + views_per_pass] for k, v in flat.items()}
        rgb, normal, hit = _render_views(part, height, width)
        rgbs.append(rgb)
        normals.append(normal)
        if with_flow:
            hits.append(hit)
    rgb = torch.round(torch.cat(rgbs) * 255) / 255
    shape = (B, F, 3, height, width)
    clips = Clips(rgb.reshape(shape), torch.cat(normals).reshape(shape))
    if with_flow and F > 1:
        hit = {k: torch.cat([h[k] for h in hits]).reshape(B, F, *hits[0][k].shape[1:]) for k in hits[0]}
        per_clip = {k: v.reshape(B, F, *v.shape[1:]) for k, v in flat.items()}
        cur = {k: v[:, :-1].flatten(0, 1) for k, v in per_clip.items()}
        nxt = {k: v[:, 1:].flatten(0, 1) for k, v in per_clip.items()}
        now = {k: v[:, :-1].flatten(0, 1) for k, v in hit.items()}
        flow = _flow(cur, nxt, now, hit["depth"][:, 1:].flatten(0, 1), height, width)
        clips.flow = flow.reshape(B, F - 1, height, width, 2)
    return clips
