"""Drawing one phantom frontal chest radiograph (PA display: the patient's right on the image left).

Everything is drawn on a grid of normalized coordinates ``u`` (left -> right) and ``v`` (top ->
bottom), both in [-1, 1], as a *density* map (0 = air, ~0.55 = soft tissue, higher = bone/metal);
the acquisition step then maps density to display intensity with the site's exposure, contrast,
blur, noise, collimation and burned-in markers. Edges are soft over ~0.6 pixel so that any size
(16-256 px) renders without aliasing. The functions here are pure: all randomness comes from the
``numpy.random.Generator`` passed in.

Findings and how they are drawn (severity ``s`` in (0, 1]):

=========================== ========================================================================
Enlarged Cardiomediastinum  widened superior mediastinum and aortic knob
Cardiomegaly                cardiothoracic ratio 0.48 + 0.14 s (normal 0.36-0.50); AP views magnify x1.1
Lung Opacity                faint ground-glass patch (its other causes are drawn by their own labels)
Lung Lesion                 one (two if severe) sharply marginated round nodule/mass, radius ~ s
Edema                       bilateral perihilar haze, indistinct vessels, Kerley B lines
Consolidation               dense lobar opacity bounded by a fissure, with air bronchograms
Pneumonia                   multifocal fluffy patchy opacities in the mid/lower zones
Atelectasis                 plate-like linear opacity plus ipsilateral volume loss (raised diaphragm)
Pneumothorax                collapsed lung with a visceral pleural line and a lucent rim without markings
Pleural Effusion            meniscus-shaped basal opacity blunting the costophrenic angle
Pleural Other               pleural thickening along the lateral wall / apical cap
Fracture                    a rib (or clavicle) discontinuity with a step and callus
Support Devices             endotracheal tube, NG tube, central line, pacemaker with lead, ECG leads
=========================== ========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .phantom_sources import CANON

# ------------------------------------------------------------------------------------------------
# Small drawing primitives (vectorized over the whole grid)
# ------------------------------------------------------------------------------------------------


def _soft(d: np.ndarray, w: float) -> np.ndarray:
    """1 inside (d < 0), 0 outside, a smooth ramp of width ~w across the edge."""
    return 0.5 - 0.5 * np.tanh(d / w)


def _ellipse(u, v, cx, cy, rx, ry, theta=0.0):
    """Approximate signed distance to an ellipse (negative inside)."""
    c, s = np.cos(theta), np.sin(theta)
    x, y = (u - cx) * c + (v - cy) * s, -(u - cx) * s + (v - cy) * c
    return (np.sqrt((x / rx) ** 2 + (y / ry) ** 2) - 1.0) * min(rx, ry)


def _segment(u, v, p0, p1):
    """Distance to the segment p0-p1."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.hypot(u - x0 - t * dx, v - y0 - t * dy)


def _polyline(u, v, pts):
    d = _segment(u, v, pts[0], pts[1])
    for a, b in zip(pts[1:-1], pts[2:]):
        d = np.minimum(d, _segment(u, v, a, b))
    return d


def _line(d, width, px):
    """Intensity profile of a thin line of ``width`` at distance d (visible even below one pixel)."""
    w = max(width, 0.5 * px)
    return np.exp(-((d / w) ** 2))


def _smooth_noise(rng, size, sigma_px):
    n = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma_px, mode="wrap")
    return n / (n.std() + 1e-8)


def _bezier(p0, p1, p2, n=6):
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)
    return [tuple(p) for p in pts]


# 5x7 bitmaps for burned-in side markers
_GLYPHS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}


def _glyph(letter: str) -> np.ndarray:
    return np.array([[c == "1" for c in row] for row in _GLYPHS[letter]], dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# Patient anatomy and study geometry
# ------------------------------------------------------------------------------------------------
@dataclass
class Anatomy:
    """What stays the same across a patient's follow-up studies."""

    mask_id: int
    width: float  # half-width of the lung box (normalized units)
    aspect: float  # lung box height / width, from the real mask
    body: float  # half-width of the torso silhouette
    ctr: float  # baseline cardiothoracic ratio
    rib_phase: float
    rib_spacing: float
    breasts: bool
    bubble: bool


def sample_anatomy(rng: np.random.Generator, bank: dict, sex: str | None, age: float) -> Anatomy:
    k = int(rng.integers(len(bank["aspect"])))
    male = sex == "M"
    age = 55.0 if not np.isfinite(age) else float(age)
    width = 0.66 * (1.04 if male else 0.97) * rng.uniform(0.93, 1.07)
    aspect = float(np.clip(bank["aspect"][k] * rng.uniform(0.95, 1.05), 0.75, 1.35))
    habitus = rng.normal(0.0, 0.05) + 0.0015 * (age - 50)  # soft tissue grows a little with age
    return Anatomy(
        mask_id=k,
        width=width,
        aspect=aspect,
        body=float(np.clip(width * (1.32 + habitus), 0.8, 1.02)),
        ctr=float(np.clip(rng.normal(0.44 + 0.0008 * (age - 50), 0.025), 0.36, 0.5)),
        rib_phase=float(rng.uniform(0, 1)),
        rib_spacing=float(rng.uniform(0.125, 0.145)),
        breasts=(sex == "F") and rng.random() < 0.85,
        bubble=rng.random() < 0.6,
    )


@dataclass
class Acquisition:
    """Site-dependent imaging chain for one image."""

    exposure: float = 1.0  # multiplies density before display mapping
    contrast: float = 1.0
    gamma: float = 1.0
    brightness: float = 0.0
    noise: float = 0.02  # std of additive noise (display units)
    blur: float = 0.5  # gaussian sigma in pixels at 64 px
    collimation: tuple = (0.0, 0.0, 0.0, 0.0)  # fraction of the image masked: left, right, top, bottom
    collimation_value: float = 0.0  # display value of collimated borders (0 black, 1 white)
    marker: str | None = None  # "L" or "R"
    marker_pos: str = "tl"  # tl, tr, bl, br
    text_bar: str | None = None  # position of a block of burned-in "text": tl, tr, bl, br
    rotation: float = 0.0  # degrees
    shift: tuple = (0.0, 0.0)
    inspiration: float = 1.0  # lung height scale


@dataclass
class Findings:
    """Latent truth: severity per rendered finding (0 = absent) and the choices drawn for them."""

    severity: dict = field(default_factory=dict)

    def s(self, name: str) -> float:
        return float(self.severity.get(name, 0.0))


# ------------------------------------------------------------------------------------------------
# The renderer
# ------------------------------------------------------------------------------------------------
def _sample_lung(mask: np.ndarray, u, v, box, center_scale=None):
    """Bilinearly sample a canonical lung mask placed in ``box`` = (cx, cy, hw, hh).

    ``center_scale`` = (ax, ay, fx, fy) shrinks the lung by (fx, fy) towards the anchor (ax, ay),
    used for volume loss and pneumothorax."""
    cx, cy, hw, hh = box
    if center_scale is not None:
        ax, ay, fx, fy = center_scale
        u = ax + (u - ax) / fx
        v = ay + (v - ay) / fy
    mx = ((u - cx) / hw + 1.0) * 0.5 * (CANON - 1)
    my = ((v - cy) / hh + 1.0) * 0.5 * (CANON - 1)
    return ndimage.map_coordinates(mask, [my, mx], order=1, mode="constant", cval=0.0)


def render(
    size: int,
    anatomy: Anatomy,
    findings: Findings,
    acq: Acquisition,
    view: str,
    bank: dict,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict]:
    """Render one image. Returns (uint8 [size, size], geometry dict for tests/figures)."""
    S = int(size)
    px = 2.0 / S
    w = 0.6 * px  # edge softness
    coords = (np.arange(S) + 0.5) / S * 2.0 - 1.0
    # 1. geometry: rotation and shift of the patient within the field of view
    th = np.deg2rad(acq.rotation)
    U0, V0 = np.meshgrid(coords, coords)
    u = np.cos(th) * U0 + np.sin(th) * V0 - acq.shift[0]
    v = -np.sin(th) * U0 + np.cos(th) * V0 - acq.shift[1]
    sv = findings.s
    ap = view == "AP"

    hw = anatomy.width
    hh = anatomy.aspect * hw * 0.98 * acq.inspiration
    cy = -0.86 + hh  # lung apices sit near the top of the field
    box = (0.0, cy, hw, hh)
    bottom = cy + hh
    right_mask, left_mask = bank["right"][anatomy.mask_id], bank["left"][anatomy.mask_id]
    _draw_choices(rng, findings, anatomy, hw, hh, cy)

    # 2. per-side lung volume: atelectasis raises the diaphragm; pneumothorax collapses the lung
    side_at = findings.severity.get("_atel_side", 0)
    side_ptx = findings.severity.get("_ptx_side", 0)
    lungs = {}
    for side, mask in ((-1, right_mask), (1, left_mask)):
        fy = 1.0 - (0.10 * sv("Atelectasis") if side_at == side else 0.0)
        space = _sample_lung(mask, u, v, box, (0.0, cy - hh, 1.0, fy)) if fy < 1 else _sample_lung(mask, u, v, box)
        tissue = space
        if side_ptx == side and sv("Pneumothorax") > 0:
            f = 1.0 - (0.10 + 0.32 * sv("Pneumothorax"))
            anchor = (side * 0.12 * hw, bottom - 0.25 * hh)  # the lung collapses towards the hilum
            tissue = _sample_lung(mask, u, v, box, (anchor[0], anchor[1], f, f)) * space
        lungs[side] = (space, tissue)
    space = np.clip(lungs[-1][0] + lungs[1][0], 0, 1)
    tissue = np.clip(lungs[-1][1] + lungs[1][1], 0, 1)

    # 3. body silhouette (soft tissue), shoulders and breasts
    shoulder = cy - 1.25 * hh + 0.18 * (u / anatomy.body) ** 2  # top edge of the shoulders
    torso = _soft(np.abs(u) - anatomy.body, 2 * w) * _soft(shoulder - v, 2 * w)
    neck = _soft(np.abs(u) - 0.24, 2 * w)
    body = np.maximum(torso, neck)
    dens = 0.03 + 0.52 * body + 0.06 * body * np.clip(np.abs(u) / anatomy.body, 0, 1) ** 2
    if anatomy.breasts:
        for sgn in (-1, 1):
            dens += 0.07 * _soft(_ellipse(u, v, sgn * 0.55 * hw, bottom - 0.15, 0.32 * hw, 0.2), 0.08) * body

    # 4. heart and mediastinum cover the medial lungs (enlarged cardiomediastinum widens the upper
    #    mediastinum; cardiomegaly raises the cardiothoracic ratio; AP views magnify the heart)
    med_hw = 0.085 + (0.015 + 0.045 * sv("Enlarged Cardiomediastinum") if sv("Enlarged Cardiomediastinum") else 0.0)
    med = _soft(np.abs(u - 0.015) - med_hw, w) * _soft(v - (bottom - 0.55 * hh), 0.05)
    ctr = anatomy.ctr if not sv("Cardiomegaly") else 0.48 + 0.14 * sv("Cardiomegaly")
    if ap:
        ctr *= 1.1
    h_rx = ctr * hw
    h_ry = 0.72 * h_rx
    h_cx = 0.3 * h_rx
    h_cy = bottom - 0.08 * hh - 0.6 * h_ry
    heart = _soft(_ellipse(u, v, h_cx, h_cy, h_rx, h_ry, np.deg2rad(-15)), 1.5 * w)
    cover = np.maximum(med, heart)
    space = space * (1 - cover)
    tissue = tissue * (1 - cover)
    dens += 0.025 * heart

    # 5. lungs: air lowers the density; markings (vessels) are brightest near the hila
    tex = _smooth_noise(rng, S, max(0.7, S / 64 * 0.8))
    hil_y = cy + 0.15 * hh
    d_hil = np.minimum(np.hypot(u + 0.2 * hw, v - hil_y), np.hypot(u - 0.22 * hw, v - hil_y))
    vessels = np.exp(-d_hil / 0.28) * (0.55 + 0.2 * tex)
    edema = sv("Edema")
    dens -= 0.40 * space
    dens += tissue * (0.035 * tex + 0.10 * vessels * (1 + 0.8 * edema))
    ptx_rim = np.clip(space - tissue, 0, 1)
    dens -= 0.05 * ptx_rim  # no markings and a little more lucent where the lung has collapsed
    if sv("Pneumothorax") > 0:
        edge = 4.0 * tissue * (1 - tissue)  # peaks on the visceral pleural line
        dens += 0.16 * edge * (ptx_rim > 0.02) * space

    # 6. spine, trachea, aortic knob and gastric bubble
    spine = _soft(np.abs(u) - 0.055, w) * body
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * (v + 1) / 0.085)
    dens += spine * (0.04 + 0.03 * vert)
    trachea = _soft(np.abs(u - 0.01) - 0.028, w) * _soft(v - (cy - 0.1 * hh), w)  # down to the carina
    dens -= 0.12 * trachea * body
    knob_r = 0.06 + 0.03 * sv("Enlarged Cardiomediastinum")
    dens += 0.08 * _soft(_ellipse(u, v, med_hw + 0.02, cy - 0.25 * hh, knob_r, 0.06), w) * (1 - space)
    if anatomy.bubble:
        dens -= 0.12 * _soft(_ellipse(u, v, 0.45 * hw, bottom + 0.06, 0.12, 0.05), w) * body

    # 7. bones: posterior ribs as a periodic field following the rib curvature, clavicles
    au = np.abs(u)
    rib_curve = v - 0.42 * (au / hw) ** 1.8 * hh + 0.22 * au
    phase = rib_curve / anatomy.rib_spacing + anatomy.rib_phase
    ribs = np.clip((np.cos(2 * np.pi * phase) - 0.35) / 0.65, 0, 1)
    cage = _soft(au - 1.02 * hw, w) * _soft(0.07 - au, w) * _soft(v - bottom - 0.05, w) * _soft(cy - hh - 0.05 - v, w)
    frac_s = sv("Fracture")
    if frac_s:
        fu = findings.severity["_frac_u"]
        fv = findings.severity["_frac_v"]
        if findings.severity.get("_frac_kind") == "rib":
            near = _soft(np.hypot((u - fu) / 0.035, (v - fv) / 0.12) - 1.0, 0.2)
            lateral = _soft(-(au - abs(fu)), w)  # beyond the break, the rib is displaced
            shifted = np.clip((np.cos(2 * np.pi * (phase + 0.12 + 0.25 * frac_s)) - 0.35) / 0.65, 0, 1)
            ribs = ribs * (1 - near * lateral) + shifted * near * lateral
            gap = np.exp(-(((u - fu) / (0.012 + 0.01 * frac_s)) ** 2)) * _soft(np.abs(v - fv) - 0.06, w)
            ribs = ribs * (1 - 0.9 * gap)
            dens += 0.10 * frac_s * _soft(_ellipse(u, v, fu, fv, 0.03, 0.025), w)  # callus
    dens += 0.085 * ribs * cage * (0.6 + 0.4 * space)
    for sgn in (-1, 1):
        p0 = (sgn * 0.07, cy - 0.78 * hh)
        p1 = (sgn * 0.75 * hw, cy - 1.02 * hh)
        d = _segment(u, v, p0, p1)
        clav = _soft(d - 0.022, w)
        if frac_s and findings.severity.get("_frac_kind") == "clavicle" and findings.severity["_frac_side"] == sgn:
            t = 0.55
            mid = (p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1]))
            clav = clav * (1 - np.exp(-(np.hypot(u - mid[0], v - mid[1]) / (0.015 + 0.02 * frac_s)) ** 2))
        dens += 0.16 * clav * body
    if ap:  # scapulae project over the lateral lung fields in AP views
        for sgn in (-1, 1):
            dens += 0.05 * _soft(_ellipse(u, v, sgn * 0.85 * hw, cy - 0.35 * hh, 0.18, 0.35, sgn * 0.3), 3 * w)

    # 8. findings inside the lungs
    irr = _smooth_noise(rng, S, max(0.8, S / 64 * 2.0))
    if edema:
        haze = np.exp(-((d_hil / (0.22 + 0.12 * edema)) ** 2)) * (0.8 + 0.2 * irr)
        dens += 0.16 * edema * haze * space
        for sgn in (-1, 1):  # Kerley B lines: short horizontal lines at the lateral bases
            for k in range(3):
                yk = bottom - 0.12 * hh - k * 0.05
                xk = sgn * 0.85 * hw
                d = _segment(u, v, (xk, yk), (xk - sgn * 0.12, yk))
                dens += 0.10 * edema * _line(d, 0.006, px) * space
    if sv("Consolidation"):
        sgn, lower = findings.severity["_cons_side"], findings.severity["_cons_lower"]
        fissure = v - (cy + (0.05 if lower else -0.1) * hh) - 0.25 * sgn * u
        region = _soft(-fissure if lower else fissure, 2 * w) * _soft(-sgn * u, w)
        region = region * np.clip(0.75 + 0.4 * irr, 0, 1)
        cons = 0.30 * sv("Consolidation") * region * tissue
        # air bronchograms: dark branching tubes inside the opacity
        hx = sgn * 0.2 * hw
        for ang in (0.35, 0.8):
            tip = (hx + sgn * 0.45 * hw * np.cos(ang), hil_y + (0.4 if lower else -0.4) * hh * np.sin(ang))
            cons -= 0.08 * sv("Consolidation") * _line(_segment(u, v, (hx, hil_y), tip), 0.008, px) * region * tissue
        dens += cons
    if sv("Pneumonia"):
        for (bu, bv, br) in findings.severity["_pna_blobs"]:
            blob = np.exp(-((np.hypot(u - bu, v - bv) / br) ** 2)) * np.clip(0.7 + 0.45 * irr, 0, 1.3)
            dens += 0.22 * sv("Pneumonia") * blob * tissue
    if sv("Lung Opacity") and findings.severity.get("_opacity_alone"):
        bu, bv, br = findings.severity["_op_blob"]
        dens += 0.12 * sv("Lung Opacity") * np.exp(-((np.hypot(u - bu, v - bv) / br) ** 2)) * tissue
    if sv("Atelectasis"):
        sgn = side_at
        y0 = bottom - (0.28 + 0.1 * sv("Atelectasis")) * hh
        p0, p1 = (sgn * 0.25 * hw, y0 - 0.04), (sgn * 0.8 * hw, y0 + 0.05)
        dens += 0.28 * sv("Atelectasis") * _soft(_segment(u, v, p0, p1) - (0.01 + 0.015 * sv("Atelectasis")), w) * tissue
    if sv("Lung Lesion"):
        for (lu, lv, lr) in findings.severity["_lesions"]:
            dens += 0.30 * _soft(_ellipse(u, v, lu, lv, lr, lr * 0.9), w) * np.maximum(tissue, 0.3)
    if sv("Pleural Other"):
        sgn = findings.severity["_po_side"]
        mask = right_mask if sgn < 0 else left_mask
        inner = _sample_lung(mask, u, v, box, (0.0, bottom, 0.9 - 0.05 * sv("Pleural Other"), 0.95))
        rim = np.clip(lungs[sgn][0] - inner, 0, 1)
        dens += 0.22 * sv("Pleural Other") * rim
    if sv("Pleural Effusion"):
        for sgn in findings.severity["_eff_sides"]:
            h = (0.12 + 0.45 * sv("Pleural Effusion")) * hh
            lat = np.clip(sgn * u / hw, 0, 1)
            level = bottom - h * (0.45 + 0.8 * lat)  # meniscus: higher laterally
            fluid = _soft(level - v, 0.03) * _soft(-sgn * u + 0.02, w)
            dens += 0.36 * fluid * lungs[sgn][0] * (1 - cover)

    # 9. support devices (radio-opaque lines and boxes)
    for dev in findings.severity.get("_devices", ()):
        kind = dev[0]
        if kind == "ett":
            d = _segment(u, v, (0.012, -1.05), (0.012, cy - 0.02 * hh))
            dens += 0.25 * _line(d, 0.006, px)
        elif kind == "ngt":
            pts = [(0.02, -1.05), (0.03, cy)] + _bezier((0.03, cy), (0.05, bottom + 0.05), (0.4 * hw, bottom + 0.12), 4)
            dens += 0.2 * _line(_polyline(u, v, pts), 0.005, px)
        elif kind == "cvc":
            sgn = dev[1]
            pts = _bezier((sgn * 0.6 * hw, cy - 1.05 * hh), (sgn * 0.15, cy - 0.9 * hh), (-0.05, cy - 0.2 * hh), 6)
            dens += 0.2 * _line(_polyline(u, v, pts), 0.005, px)
        elif kind == "pacer":
            bx, by = 0.62 * hw, cy - 0.8 * hh
            dens += 0.7 * _soft(_ellipse(u, v, bx, by, 0.09, 0.06), w)
            pts = _bezier((bx - 0.06, by), (0.05, cy - 0.4 * hh), (h_cx, h_cy + 0.3 * h_ry), 6)
            dens += 0.35 * _line(_polyline(u, v, pts), 0.007, px)
        elif kind == "ecg":
            for (eu, ev) in dev[1]:
                dens += 0.45 * _soft(np.hypot(u - eu, v - ev) - 0.025, w)
                d = _segment(u, v, (eu, ev), (eu + 0.3 * np.sign(eu), ev - 0.5))
                dens += 0.15 * _line(d, 0.004, px)

    # 10. acquisition: exposure, contrast/gamma, blur, noise, collimation, markers
    img = np.clip(dens * acq.exposure, 0, None)
    img = np.clip((img - 0.02) * acq.contrast * 1.2 + acq.brightness, 0, 1) ** acq.gamma
    if acq.blur > 0:
        img = ndimage.gaussian_filter(img, acq.blur * S / 64.0)
    img = img + rng.normal(0.0, 1.0, img.shape) * acq.noise * (0.5 + 0.8 * np.sqrt(np.clip(img, 0, 1)))
    l, r, t, b = acq.collimation
    if any(c > 0 for c in acq.collimation):
        cm = (U0 < -1 + 2 * l) | (U0 > 1 - 2 * r) | (V0 < -1 + 2 * t) | (V0 > 1 - 2 * b)
        img = np.where(cm, acq.collimation_value + rng.normal(0, acq.noise * 0.3, img.shape), img)
    _burn_in(img, acq, S)
    out = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return out, {"heart_width": 2 * h_rx, "thorax_width": 2 * hw * 1.02, "ctr": ctr}


def _draw_choices(rng, findings: Findings, anatomy: Anatomy, hw: float, hh: float, cy: float) -> None:
    """Draw where each present finding goes (sides, blob positions, devices) into ``findings``.

    Drawn in a fixed order from the image's own generator, so the same image always gets the same
    choices; the choices are recorded (keys starting with '_') for figures and tests."""
    sv, f = findings.s, findings.severity
    side = lambda: int(rng.choice([-1, 1]))  # noqa: E731
    f["_atel_side"] = side() if sv("Atelectasis") else 0
    f["_ptx_side"] = side() if sv("Pneumothorax") else 0
    if sv("Consolidation"):
        f["_cons_side"], f["_cons_lower"] = side(), bool(rng.random() < 0.65)
    if sv("Pneumonia"):
        f["_pna_blobs"] = [
            (s * rng.uniform(0.3, 0.8) * hw, cy + rng.uniform(-0.2, 0.75) * hh, rng.uniform(0.07, 0.14))
            for s in (side() for _ in range(int(rng.integers(2, 5))))
        ]
    others = ("Edema", "Consolidation", "Pneumonia", "Atelectasis", "Lung Lesion")
    f["_opacity_alone"] = bool(sv("Lung Opacity") and not any(sv(o) for o in others))
    if f["_opacity_alone"]:
        f["_op_blob"] = (side() * rng.uniform(0.3, 0.75) * hw, cy + rng.uniform(-0.4, 0.7) * hh, rng.uniform(0.12, 0.22))
    if sv("Lung Lesion"):
        n = 2 if sv("Lung Lesion") > 0.85 else 1
        r = 0.025 + 0.07 * sv("Lung Lesion")
        f["_lesions"] = [(side() * rng.uniform(0.3, 0.75) * hw, cy + rng.uniform(-0.55, 0.55) * hh, r) for _ in range(n)]
    if sv("Pleural Other"):
        f["_po_side"] = side()
    if sv("Pleural Effusion"):
        f["_eff_sides"] = [(-1,), (1,), (-1, 1)][int(rng.choice(3, p=[0.3, 0.3, 0.4]))]
    if sv("Fracture"):
        f["_frac_kind"] = "rib" if rng.random() < 0.8 else "clavicle"
        f["_frac_side"] = side()
        fu = f["_frac_side"] * rng.uniform(0.45, 0.85) * hw
        # snap the break onto the centre of a rib: phase(u, v) is an integer there (see step 7)
        curve = 0.42 * (abs(fu) / hw) ** 1.8 * hh - 0.22 * abs(fu)
        k = np.round((cy + rng.uniform(-0.6, 0.4) * hh - curve) / anatomy.rib_spacing + anatomy.rib_phase)
        f["_frac_u"], f["_frac_v"] = fu, curve + (k - anatomy.rib_phase) * anatomy.rib_spacing
    if sv("Support Devices"):
        devs = []
        if rng.random() < 0.45:
            devs.append(("ett",))
        if rng.random() < 0.35:
            devs.append(("ngt",))
        if rng.random() < 0.55 or not devs:
            devs.append(("cvc", side()))
        if rng.random() < 0.15:
            devs.append(("pacer",))
        if rng.random() < 0.3:
            devs.append(("ecg", [(s * rng.uniform(0.3, 0.9) * hw, cy + rng.uniform(-1.0, -0.6) * hh) for s in (-1, 1)]))
        f["_devices"] = devs


def _burn_in(img: np.ndarray, acq: Acquisition, S: int) -> None:
    """Stamp a side marker and a block of 'text' (bright) into a corner, in place."""
    def corner(pos, h, w_):
        m = max(1, S // 32)
        y = m if pos[0] == "t" else S - h - m
        x = m if pos[1] == "l" else S - w_ - m
        return y, x

    if acq.marker:
        g = _glyph(acq.marker)
        scale = max(1, round(S / 48))
        g = np.kron(g, np.ones((scale, scale), np.float32))
        y, x = corner(acq.marker_pos, *g.shape)
        img[y : y + g.shape[0], x : x + g.shape[1]] = np.maximum(img[y : y + g.shape[0], x : x + g.shape[1]], 0.95 * g)
    if acq.text_bar:
        h, w_ = max(1, S // 40), max(4, S // 5)
        y, x = corner(acq.text_bar, 2 * h + 1, w_)
        for k in range(2):
            img[y + k * (h + 1) : y + k * (h + 1) + h, x : x + w_ - 2 * k * (S // 16)] = 0.9
