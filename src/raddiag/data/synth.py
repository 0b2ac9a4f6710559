"""A generated dataset shaped like the real problem (``raddiag data synth``).

Cases of 1-4 scans over five anatomies, mixing 3D CT / MRI volumes (NPY ``[H, W, D]``,
varied size and depth) and 2D X-ray / ultrasound images (PNG); multi-label, long-tailed
(Zipf-like class frequencies, some classes with a handful of cases), ~17 % normal cases,
some patients with two cases. Labels are real disorder names with real ICD-10-CM
3-character categories, and a disorder's look is derived from its place in the ICD tree:

- the ICD **block** (or chapter) fixes the lesion *family* (neoplasms: bright round masses,
  pneumonias: patchy textured opacities, fractures: thin dark lines across bone,
  cerebrovascular: blood / infarct regions, calculi: small bright dots, ...);
- the 3-character **category** fixes *where* and *how large* (its ``CATEGORIES`` entry);
- the **disorder** adds a small variation (intensity, texture frequency, a ring, a count).

So a tail class resembles its hierarchy siblings, which is what lets knowledge of the
hierarchy help the tail. The anatomy fixes the background (head, chest with two lung
fields, abdomen, sagittal spine, limb bones). Everything is drawn with vectorised numpy
from ``numpy.random.default_rng([seed, ...])``: the same seed gives identical files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from raddiag.data.case import NORMAL, Case, Scan, read_manifest, write_manifest

# --------------------------------------------------------------------------------------
# Label space: (name, ICD-10-CM category, anatomy, relative frequency rank weight, variation)
# The list order is the frequency rank (Zipf-like weights follow it).
# --------------------------------------------------------------------------------------
ANATOMIES = ["Head and Neck", "Chest", "Abdomen and Pelvis", "Spine", "Limbs"]


@dataclass(frozen=True)
class Disorder:
    name: str
    code: str
    anatomy: str
    var: dict = field(default_factory=dict)   # disorder-level variation on top of its category


DISORDERS: list[Disorder] = [
    Disorder("Pneumonia", "J18", "Chest"),
    Disorder("Ischaemic stroke", "I63", "Head and Neck"),
    Disorder("Distal radius fracture", "S52", "Limbs"),
    Disorder("Disc herniation", "M51", "Spine"),
    Disorder("Lung cancer", "C34", "Chest"),
    Disorder("Glioma", "C71", "Head and Neck"),
    Disorder("Hip fracture", "S72", "Limbs"),
    Disorder("Pleural effusion", "J90", "Chest"),
    Disorder("Kidney stone", "N20", "Abdomen and Pelvis"),
    Disorder("Appendicitis", "K35", "Abdomen and Pelvis"),
    Disorder("Subdural haemorrhage", "I62", "Head and Neck"),
    Disorder("Pneumothorax", "J93", "Chest"),
    Disorder("Hepatocellular carcinoma", "C22", "Abdomen and Pelvis"),
    Disorder("Meningioma", "D32", "Head and Neck"),
    Disorder("Ankle fracture", "S82", "Limbs"),
    Disorder("Bacterial pneumonia", "J15", "Chest", {"density": 1.15, "freq": 4.0}),
    Disorder("Renal cell carcinoma", "C64", "Abdomen and Pelvis"),
    Disorder("Spondylolisthesis", "M43", "Spine"),
    Disorder("Hydronephrosis", "N13", "Abdomen and Pelvis"),
    Disorder("Intracerebral haemorrhage", "I61", "Head and Neck"),
    Disorder("Viral pneumonia", "J12", "Chest", {"density": 0.8, "freq": 9.0}),
    Disorder("Abdominal aortic aneurysm", "I71", "Abdomen and Pelvis"),
    Disorder("Pulmonary embolism", "I26", "Chest"),
    Disorder("Lumbar compression fracture", "S32", "Spine"),
    Disorder("Osteosarcoma", "C40", "Limbs"),
    Disorder("Cholelithiasis", "K80", "Abdomen and Pelvis"),
    Disorder("Emphysema", "J43", "Chest"),
    Disorder("Humerus fracture", "S42", "Limbs"),
    # larger than a glioma, a necrotic core inside an enhancing ring, vasogenic oedema around it
    Disorder("Glioblastoma", "C71", "Head and Neck", {"ring": True, "delta": 0.05, "size": 1.45, "oedema": True}),
    Disorder("Hydrocephalus", "G91", "Head and Neck"),
    Disorder("Pituitary adenoma", "D35", "Head and Neck"),
    Disorder("Spinal stenosis", "M48", "Spine"),
    Disorder("Uterine fibroid", "D25", "Abdomen and Pelvis"),
    # several small deep infarcts (basal ganglia) instead of one territorial one
    Disorder("Lacunar infarct", "I63", "Head and Neck", {"cv": 0.1, "cu": 0.27, "rv": 0.075, "ru": 0.075,
                                                         "n": 3, "spread": (0.14, 0.07)}),
    Disorder("Femoral shaft fracture", "S72", "Limbs", {"cv": 0.35, "cu": 0.15, "angle": 0.2}),
    Disorder("Brain metastases", "C79", "Head and Neck"),
    Disorder("Diverticulitis", "K57", "Abdomen and Pelvis"),
    Disorder("Skull fracture", "S02", "Head and Neck"),
    Disorder("Chronic obstructive pulmonary disease", "J44", "Chest", {"density": 0.6, "bullae": 0}),
    # a stone down the ureter that obstructs: the kidney above it is dilated
    Disorder("Ureteric stone", "N20", "Abdomen and Pelvis", {"cv": 0.46, "cu": 0.3, "delta": -0.05, "obstructs": True}),
    Disorder("Osteomyelitis", "M86", "Limbs"),
    Disorder("Liver metastases", "C78", "Abdomen and Pelvis"),
    Disorder("Osteochondroma", "D16", "Limbs"),
]

# ICD-10-CM block and chapter of each category used (checked against simple_icd_10_cm in the
# tests; hard-coded because importing that package costs seconds).
ICD_PARENTS = {
    "J18": ("J09-J18", "10"), "I63": ("I60-I69", "9"), "S52": ("S50-S59", "19"), "M51": ("M50-M54", "13"),
    "C34": ("C30-C39", "2"), "C71": ("C69-C72", "2"), "S72": ("S70-S79", "19"), "J90": ("J90-J94", "10"),
    "N20": ("N20-N23", "14"), "K35": ("K35-K38", "11"), "I62": ("I60-I69", "9"), "J93": ("J90-J94", "10"),
    "C22": ("C15-C26", "2"), "D32": ("D10-D36", "2"), "S82": ("S80-S89", "19"), "J15": ("J09-J18", "10"),
    "C64": ("C64-C68", "2"), "M43": ("M40-M43", "13"), "N13": ("N10-N16", "14"), "I61": ("I60-I69", "9"),
    "J12": ("J09-J18", "10"), "I71": ("I70-I79", "9"), "I26": ("I26-I28", "9"), "S32": ("S30-S39", "19"),
    "C40": ("C40-C41", "2"), "K80": ("K80-K87", "11"), "J43": ("J40-J4A", "10"), "S42": ("S40-S49", "19"),
    "G91": ("G89-G99", "6"), "D35": ("D10-D36", "2"), "M48": ("M45-M49", "13"), "D25": ("D10-D36", "2"),
    "C79": ("C76-C80", "2"), "K57": ("K55-K64", "11"), "S02": ("S00-S09", "19"), "J44": ("J40-J4A", "10"),
    "M86": ("M86-M90", "13"), "C78": ("C76-C80", "2"), "D16": ("D10-D36", "2"),
}

# ICD block -> lesion family. Blocks not listed fall back to their chapter (CHAPTER_FAMILY).
BLOCK_FAMILY = {
    "J09-J18": "patchy", "J85-J86": "abscess", "J90-J94": "pleural", "J40-J4A": "lucency",
    "I60-I69": "cerebrovascular", "I26-I28": "vascular", "I70-I79": "vascular",
    "N20-N23": "stone", "K80-K87": "stone", "N10-N16": "fluid", "N80-N98": "fluid",
    "G89-G99": "fluid", "M40-M43": "dorsopathy", "M45-M49": "dorsopathy", "M50-M54": "dorsopathy",
    "M86-M90": "patchy",
}
CHAPTER_FAMILY = {"2": "mass", "19": "fracture", "11": "inflammation"}

# Category -> location / size / shape in the anatomy's normalised frame: v vertical
# (-1 top / anterior), u horizontal, z through-plane (3D only), all in [-1, 1].
# "lat": mirrored to a random side; "region": limb region; "best": modalities that show it.
CATEGORIES: dict[str, dict] = {
    # Head and Neck (axial)
    "I63": dict(cv=-0.1, cu=0.33, rv=0.24, ru=0.17, lat=True, shape="blob", tissue="infarct", best=["MRI", "CT"]),
    "I61": dict(cv=0.05, cu=0.2, rv=0.12, ru=0.1, lat=True, shape="blob", tissue="blood", best=["CT"]),
    "I62": dict(cv=-0.1, cu=0.5, rv=0.45, ru=0.2, lat=True, shape="crescent", tissue="blood", best=["CT"]),
    "C71": dict(cv=-0.25, cu=0.3, rv=0.16, ru=0.15, lat=True, best=["MRI", "CT"]),
    "D32": dict(cv=-0.5, cu=0.28, rv=0.13, ru=0.13, lat=True, best=["MRI", "CT"]),
    "D35": dict(cv=-0.2, cu=0.0, rv=0.08, ru=0.08, cz=-0.3, best=["MRI"]),
    "C79": dict(cv=-0.1, cu=0.0, rv=0.065, ru=0.065, n=4, spread=(0.4, 0.4), best=["MRI", "CT"]),
    "S02": dict(cv=-0.55, cu=0.45, rv=0.35, angle=1.0, lat=True, best=["CT", "X-ray"]),
    "G91": dict(cv=-0.05, cu=0.1, rv=0.3, ru=0.11, bilateral=True, best=["CT", "MRI"]),
    # Chest (axial CT / frontal X-ray)
    "J18": dict(cv=0.2, cu=0.42, rv=0.2, ru=0.17, lat=True, freq=6.0, best=["X-ray", "CT"]),
    "J12": dict(cv=0.12, cu=0.42, rv=0.26, ru=0.2, bilateral=True, best=["X-ray", "CT"]),
    "J15": dict(cv=-0.15, cu=0.42, rv=0.24, ru=0.2, lat=True, best=["X-ray", "CT"]),
    "J90": dict(level=0.22, lat=True, best=["X-ray", "CT", "Ultrasound"]),
    "J93": dict(cv=-0.25, cu=0.62, rv=0.4, ru=0.2, lat=True, best=["X-ray", "CT"]),
    "J43": dict(density=1.0, bullae=3, best=["CT", "X-ray"]),
    "J44": dict(density=1.0, bullae=3, best=["CT", "X-ray"]),
    "C34": dict(cv=-0.12, cu=0.42, rv=0.12, ru=0.12, lat=True, best=["CT", "X-ray"]),
    "I26": dict(cv=-0.05, cu=0.0, rv=0.06, ru=0.06, kind="defect", best=["CT"]),
    # Abdomen and Pelvis (axial)
    "C64": dict(cv=0.28, cu=0.42, rv=0.1, ru=0.1, lat=True, best=["CT", "MRI", "Ultrasound"]),
    "N13": dict(cv=0.28, cu=0.42, rv=0.11, ru=0.065, lat=True, best=["Ultrasound", "CT"]),
    "N20": dict(cv=0.3, cu=0.42, rv=0.04, ru=0.04, lat=True, best=["CT", "Ultrasound"]),
    "K80": dict(cv=0.1, cu=-0.25, rv=0.04, ru=0.04, n=2, spread=(0.04, 0.03), best=["Ultrasound", "CT"]),
    "K35": dict(cv=0.3, cu=-0.35, rv=0.08, ru=0.08, best=["CT", "Ultrasound"]),
    "K57": dict(cv=0.25, cu=0.4, rv=0.08, ru=0.08, best=["CT"]),
    "C22": dict(cv=-0.12, cu=-0.45, rv=0.15, ru=0.14, best=["CT", "MRI"]),
    "C78": dict(cv=-0.12, cu=-0.45, rv=0.06, ru=0.06, n=4, spread=(0.22, 0.2), best=["CT", "MRI"]),
    "I71": dict(cv=0.3, cu=0.05, rv=0.16, ru=0.16, kind="aneurysm", best=["CT", "Ultrasound"]),
    "D25": dict(cv=0.22, cu=0.0, rv=0.15, ru=0.15, cz=-0.35, best=["MRI", "Ultrasound", "CT"]),
    # Spine (sagittal): "level" picks a disc / vertebra
    "M51": dict(kind="bulge", best=["MRI"]),
    "M43": dict(kind="slip", best=["X-ray", "MRI", "CT"]),
    "M48": dict(kind="stenosis", best=["MRI", "CT"]),
    "S32": dict(cv=0.36, cu=-0.1, rv=0.2, angle=0.05, best=["CT", "X-ray", "MRI"]),
    # Limbs (coronal / frontal): the region decides which bones are drawn
    "S52": dict(region="forearm", cv=0.6, cu=-0.18, rv=0.12, angle=0.25, best=["X-ray"]),
    "S72": dict(region="hip", cv=-0.36, cu=-0.02, rv=0.12, angle=-0.7, best=["X-ray", "CT"]),
    "S82": dict(region="leg", cv=0.62, cu=0.0, rv=0.35, angle=0.3, best=["X-ray", "CT"]),
    "S42": dict(region="arm", cv=-0.45, cu=0.0, rv=0.12, angle=-0.3, best=["X-ray"]),
    "C40": dict(cv=0.45, cu=0.0, rv=0.17, ru=0.15, best=["MRI", "X-ray", "CT"]),
    "D16": dict(cv=0.2, cu=0.14, rv=0.1, ru=0.08, lat=True, best=["X-ray", "MRI"]),
    "M86": dict(cv=0.3, cu=0.0, rv=0.25, ru=0.07, freq=10.0, tissue="lucent", mask="bone", best=["MRI", "X-ray"]),
}

# Modalities per anatomy (probabilities), and each modality's look of each tissue.
ANATOMY_MODALITIES = {
    "Head and Neck": {"CT": 0.5, "MRI": 0.45, "X-ray": 0.05},
    "Chest": {"X-ray": 0.6, "CT": 0.37, "Ultrasound": 0.03},
    "Abdomen and Pelvis": {"CT": 0.5, "MRI": 0.2, "Ultrasound": 0.3},
    "Spine": {"MRI": 0.5, "X-ray": 0.3, "CT": 0.2},
    "Limbs": {"X-ray": 0.65, "CT": 0.15, "MRI": 0.2},
}
PLANE = {"Head and Neck": "axial", "Chest": "axial", "Abdomen and Pelvis": "axial",
         "Spine": "sagittal", "Limbs": "coronal"}
LIMB_REGIONS = ["forearm", "hip", "leg", "arm"]
TISSUE = {
    "CT": dict(air=0.0, lung=0.1, fat=0.3, soft=0.48, fluid=0.4, brain=0.54, bone=0.95, vessel=0.74,
               marrow=0.68, mass=0.76, blood=0.82, infarct=0.34, consolidation=0.56, calc=1.0, lucent=0.38),
    "MRI": dict(air=0.0, lung=0.04, fat=0.75, soft=0.36, fluid=0.92, brain=0.5, bone=0.08, vessel=0.1,
                marrow=0.58, mass=0.8, blood=0.78, infarct=0.86, consolidation=0.62, calc=0.02, lucent=0.88),
    "X-ray": dict(air=0.02, lung=0.2, fat=0.42, soft=0.5, fluid=0.55, brain=0.5, bone=0.92, vessel=0.5,
                  marrow=0.74, mass=0.76, blood=0.55, infarct=0.5, consolidation=0.62, calc=1.0, lucent=0.5),
    "Ultrasound": dict(air=0.05, lung=0.1, fat=0.62, soft=0.4, fluid=0.03, brain=0.45, bone=0.95, vessel=0.05,
                       marrow=0.3, mass=0.72, blood=0.3, infarct=0.5, consolidation=0.55, calc=1.0, lucent=0.2),
}
SCAN_COUNT_P = [0.4, 0.3, 0.18, 0.12]   # P(1..4 scans)
NORMAL_FRACTION = 0.17
SECOND_LABEL_FRACTION = 0.12
REPEAT_PATIENT_FRACTION = 0.08
# Zipf-Mandelbrot class weights 1 / (rank + q)^s: a few frequent classes, a long tail.
ZIPF_Q, ZIPF_S = 1.0, 1.6
MIN_CASES_PER_CLASS = 3
VISIBLE_FRACTION = 0.9                 # P(a scan of a case shows its finding), the first one always does
MIN_LESION_RADIUS = 0.0                # lesions are drawn at least this large (normalised frame: 1 = half the image)
FRACTURE_WIDTH = 0.035                 # half-width of a fracture line (normalised frame)
# Head / medium / tail cut-offs (training cases) for the prepared label spaces at the default
# 400 cases: the paper's 100 / 30 would make every class tail at this scale; scaled with n_cases.
SYNTH_HEAD_MIN, SYNTH_MEDIUM_MIN = 20, 8


def icd_block(code: str) -> str:
    return ICD_PARENTS[code][0]


def icd_chapter(code: str) -> str:
    return ICD_PARENTS[code][1]


def lesion_family(code: str) -> str:
    """The lesion family a code's ICD block (or chapter) prescribes."""
    block = icd_block(code)
    if block in BLOCK_FAMILY:
        return BLOCK_FAMILY[block]
    return CHAPTER_FAMILY.get(icd_chapter(code), "mass")


def lesion_params(d: Disorder) -> dict:
    """Family (from block / chapter) + category location / size + disorder variation."""
    p = {"family": lesion_family(d.code), "malignant": d.code.startswith("C")}
    p.update(CATEGORIES[d.code])
    p.update(d.var)
    return p


def class_weights() -> np.ndarray:
    """Relative frequency of each disorder (list order is the rank)."""
    return 1.0 / (np.arange(1, len(DISORDERS) + 1) + ZIPF_Q) ** ZIPF_S


def label_groups(n_cases: int) -> tuple[int, int]:
    """Synth-scale head / medium cut-offs (training cases) for ``n_cases``."""
    f = n_cases / 400
    return max(4, round(SYNTH_HEAD_MIN * f)), max(2, round(SYNTH_MEDIUM_MIN * f))


# --------------------------------------------------------------------------------------
# Drawing primitives (all vectorised; z is None for a 2D image)
# --------------------------------------------------------------------------------------
class _Grid:
    """Normalised coordinates of one scan in the anatomy frame (after the patient's pose)."""

    def __init__(self, shape, pose, z: bool, view=(1.0, 0.0, 0.0)):
        H, W = shape[:2]
        v = np.linspace(-1, 1, H, dtype=np.float32)[:, None, None]
        u = np.linspace(-1, 1, W, dtype=np.float32)[None, :, None]
        zoom, v0, u0 = view
        self.iv, self.iu = v, u
        v, u = v * zoom + v0, u * zoom + u0
        th, s, dv, du = pose
        c, sn = math.cos(th), math.sin(th)
        self.v = ((-sn * u + c * v) - dv) / s
        self.u = ((c * u + sn * v) - du) / s
        self.z = np.linspace(-1, 1, shape[2], dtype=np.float32)[None, None, :] if z else None
        self.shape = (H, W, shape[2] if z else 1)

    def zf(self, k: float = 1.25):
        """Cross-section shrink toward the ends of the volume (1 for a 2D image)."""
        if self.z is None:
            return 1.0
        return np.sqrt(np.clip(1 - (self.z / k) ** 2, 0.15, 1))

    def r(self, cv, cu, rv, ru, cz=0.0, rz=None, p=2.0):
        """Normalised (super-)ellipsoid radius; z ignored in 2D or when rz is None.
        The in-plane part is computed on [H, W, 1] and the z part on [1, 1, D] (cheap)."""
        if p == 2.0:
            dv, du = (self.v - cv) / rv, (self.u - cu) / ru
            t = dv * dv + du * du
            if self.z is not None and rz is not None:
                dz = (self.z - cz) / rz
                t = t + dz * dz
            return np.sqrt(t)
        t = np.abs((self.v - cv) / rv) ** p + np.abs((self.u - cu) / ru) ** p
        if self.z is not None and rz is not None:
            t = t + np.abs((self.z - cz) / rz) ** p
        return t ** (1.0 / p)

    def ell(self, cv, cu, rv, ru, cz=0.0, rz=None, edge=0.08, p=2.0):
        """Soft (super-)ellipsoid mask in [0, 1]."""
        return np.clip(0.5 + (1 - self.r(cv, cu, rv, ru, cz, rz, p)) / (2 * edge), 0, 1)

    def texture(self, rng, freq: float, n: int = 4):
        """Band-limited random texture in about [-1, 1] (a sum of random plane waves).
        With cos(P + Z) = cos P cos Z - sin P sin Z the 3D sum is one small matrix product."""
        a = rng.normal(size=(n, 3))
        a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-6
        ph = rng.uniform(0, 2 * np.pi, size=n)
        k = (freq * np.pi * a).astype(np.float32)
        P = k[:, 0] * self.v + k[:, 1] * self.u + ph.astype(np.float32)   # [H, W, n]
        norm = np.float32(1 / math.sqrt(n / 2))
        if self.z is None:
            return np.cos(P).sum(-1, keepdims=True) * norm
        Z = k[:, 2:3] * self.z[0, 0][None, :]                            # [n, D]
        H, W = P.shape[:2]
        cs = np.concatenate([np.cos(P), -np.sin(P)], -1).reshape(H * W, 2 * n)
        out = cs @ np.concatenate([np.cos(Z), np.sin(Z)], 0)
        return out.reshape(H, W, -1) * norm

    def band(self, cv, cu, angle, half_len, width):
        """Soft line segment through (cv, cu) at ``angle`` (radians from horizontal)."""
        dv, du = self.v - cv, self.u - cu
        c, s = math.cos(angle), math.sin(angle)
        across = np.abs(-s * du + c * dv)
        along = np.abs(c * du + s * dv)
        return np.clip(1.5 - across / width, 0, 1) * np.clip((half_len - along) / 0.05, 0, 1)


def _blend(img, m, val):
    img += m * (val - img)
    return img


# --------------------------------------------------------------------------------------
# Anatomy backgrounds: return the image and masks lesions confine themselves to
# --------------------------------------------------------------------------------------
def _head(g: _Grid, T, rng, region):
    zf = g.zf()
    img = np.full(g.shape, T["air"], np.float32)
    _blend(img, g.ell(0, 0, 0.88 * zf, 0.76 * zf, edge=0.04), T["soft"])
    skull = g.ell(0, 0, 0.8 * zf, 0.68 * zf, edge=0.03)
    _blend(img, skull, T["bone"])
    brain = g.ell(0, 0, 0.72 * zf, 0.6 * zf, edge=0.03)
    _blend(img, brain, T["brain"] + 0.02 * g.texture(rng, 5.0))
    for side in (-1, 1):
        _blend(img, g.ell(-0.05, side * 0.09, 0.2, 0.06, 0.0, 0.45, edge=0.15), T["fluid"])
    return img, {"bone": np.clip(skull - brain, 0, 1), "brain": brain}


def _chest(g: _Grid, T, rng, region, xray: bool):
    zf = g.zf()
    img = np.full(g.shape, T["air"], np.float32)
    _blend(img, g.ell(0.05, 0, 0.7, 0.95, edge=0.03), T["fat"])
    _blend(img, g.ell(0.05, 0, 0.63, 0.88, edge=0.03), T["soft"])
    lung = np.zeros(g.shape, np.float32)
    for side in (-1, 1):
        lung = np.maximum(lung, g.ell(-0.02, side * 0.42, 0.5 * zf, 0.3 * zf, edge=0.05))
    markings = 0.04 * g.texture(rng, 7.0) if xray else 0.015 * g.texture(rng, 9.0)
    _blend(img, lung, T["lung"] + markings)
    _blend(img, g.ell(0.14, 0.1, 0.27 * zf, 0.24 * zf, edge=0.06), T["soft"] + 0.04)
    _blend(img, g.ell(-0.05, 0.0, 0.09, 0.07, 0, 0.6), T["vessel"])      # pulmonary artery
    _blend(img, g.ell(0.33, -0.12, 0.07, 0.07), T["vessel"])            # aorta
    bone = g.ell(0.52, 0, 0.11, 0.11)                                   # vertebra
    if xray:  # ribs: bright arcs across the lung fields
        ribs = np.clip((np.cos((g.v * 8.0 + 1.6 * g.u ** 2) * np.pi) - 0.8) * 5, 0, 1)
        bone = np.maximum(bone, ribs * g.ell(-0.02, 0, 0.55, 0.85, edge=0.05))
    else:     # ribs: dots around the body wall
        ang = np.arctan2(g.v - 0.05, g.u)
        ring = np.clip(g.ell(0.05, 0, 0.62, 0.87, edge=0.02) - g.ell(0.05, 0, 0.57, 0.82, edge=0.02), 0, 1)
        bone = np.maximum(bone, ring * (np.cos(ang * 14) > 0.3))
    _blend(img, bone * (0.6 if xray else 1.0), T["bone"])
    return img, {"bone": bone, "lung": lung}


def _abdomen(g: _Grid, T, rng, region):
    zf = g.zf(1.4)
    img = np.full(g.shape, T["air"], np.float32)
    _blend(img, g.ell(0, 0, 0.72, 0.94, edge=0.03), T["fat"])
    _blend(img, g.ell(0.02, 0, 0.62, 0.85, edge=0.04), T["soft"] + 0.015 * g.texture(rng, 8.0))
    _blend(img, g.ell(-0.12, -0.42, 0.38 * zf, 0.36 * zf, edge=0.05), T["soft"] + 0.07)   # liver
    _blend(img, g.ell(0.1, -0.25, 0.09, 0.06, 0.1, 0.5), T["fluid"])                     # gallbladder
    _blend(img, g.ell(-0.15, 0.55, 0.16 * zf, 0.12 * zf), T["soft"] + 0.05)                # spleen
    for side in (-1, 1):
        _blend(img, g.ell(0.28, side * 0.42, 0.18 * zf, 0.11 * zf, edge=0.06), T["soft"] + 0.12)
        _blend(img, g.ell(0.28, side * 0.42, 0.07, 0.04, edge=0.2), T["fat"])             # renal sinus
    _blend(img, g.ell(0.3, 0.05, 0.065, 0.065), T["vessel"])
    bone = g.ell(0.52, 0, 0.13, 0.13)
    _blend(img, bone, T["bone"])
    return img, {"bone": bone}


SPINE_LEVELS = [-0.72 + k * 0.36 for k in range(5)]


def _spine(g: _Grid, T, rng, region, slip=None):
    zf = g.zf(1.1)
    img = np.full(g.shape, T["air"], np.float32)
    _blend(img, g.ell(0, 0.05, 1.3, 0.85, edge=0.04), T["soft"] + 0.02 * g.texture(rng, 4.0))
    _blend(img, g.ell(0, 0.75, 1.3, 0.12, edge=0.1), T["fat"])
    _blend(img, g.ell(0, 0.25, 1.4, 0.075 * zf, p=4), T["fluid"])                    # canal
    _blend(img, g.ell(0, 0.25, 1.4, 0.035 * zf, p=4), T["brain"])                    # cord
    bone = np.zeros(g.shape, np.float32)
    for k, lv in enumerate(SPINE_LEVELS):
        shift = slip[1] if slip is not None and k <= slip[0] else 0.0
        bone = np.maximum(bone, g.ell(lv, -0.1 - shift, 0.14, 0.2, 0, 0.7, edge=0.06, p=4))
        bone = np.maximum(bone, g.ell(lv, 0.45, 0.1, 0.1, 0, 0.5, edge=0.1))
        _blend(img, g.ell(lv + 0.18, -0.1, 0.035, 0.19, 0, 0.6, edge=0.2, p=4), T["fluid"] * 0.8 + T["soft"] * 0.2)
    _blend(img, bone, T["marrow"])
    _blend(img, np.clip(bone - np.clip(bone * 1.5 - 0.5, 0, 1), 0, 1), T["bone"])     # cortex rim
    return img, {"bone": bone}


def _limb_bones(region):
    """(cv, cu, rv, ru) boxes and (cv, cu, r) heads of each limb region."""
    if region == "forearm":
        return [(-0.1, -0.18, 0.85, 0.075), (-0.1, 0.18, 0.85, 0.06)], [(0.85, 0.0, 0.14)]
    if region == "hip":
        return [(0.3, 0.15, 0.75, 0.13), (-0.32, 0.02, 0.16, 0.07)], [(-0.55, -0.12, 0.17), (-0.8, -0.7, 0.35)]
    if region == "leg":
        return [(-0.05, -0.1, 0.85, 0.12), (-0.05, 0.22, 0.8, 0.05)], [(0.88, -0.02, 0.14)]
    return [(0.1, 0.0, 0.85, 0.12)], [(-0.8, 0.0, 0.17)]


def _limbs(g: _Grid, T, rng, region):
    img = np.full(g.shape, T["air"], np.float32)
    _blend(img, g.ell(0, 0, 1.2, 0.6, 0, 0.9, edge=0.05, p=3), T["fat"])
    _blend(img, g.ell(0, 0, 1.2, 0.52, 0, 0.8, edge=0.05, p=3), T["soft"] + 0.02 * g.texture(rng, 5.0))
    boxes, heads = _limb_bones(region)
    bone = np.zeros(g.shape, np.float32)
    medulla = np.zeros(g.shape, np.float32)
    for i, (cv, cu, rv, ru) in enumerate(boxes):
        if region == "hip" and i == 1:  # femoral neck: tilted
            bone = np.maximum(bone, g.band(cv, cu, 0.9, 0.22, 0.07))
            continue
        bone = np.maximum(bone, g.ell(cv, cu, rv, ru, 0, 0.35, edge=0.05, p=6))
        medulla = np.maximum(medulla, g.ell(cv, cu, rv * 0.95, ru * 0.5, 0, 0.2, edge=0.1, p=6))
    for cv, cu, r in heads:
        bone = np.maximum(bone, g.ell(cv, cu, r, r, 0, 0.4, edge=0.06))
    _blend(img, bone, T["bone"])
    _blend(img, medulla, T["marrow"])
    return img, {"bone": bone}


# --------------------------------------------------------------------------------------
# Lesions: one renderer per family; parameters come from lesion_params()
# --------------------------------------------------------------------------------------
def _lesion(img, masks, g: _Grid, T, p: dict, rng, mod: str):
    fam = p["family"]
    cv, cu, cz = p.get("cv", 0.0), p.get("cu", 0.0), p.get("cz_case", 0.0)
    rv, ru = p.get("rv", 0.1) * p.get("size", 1.0), p.get("ru", p.get("rv", 0.1)) * p.get("size", 1.0)
    rv, ru = max(rv, MIN_LESION_RADIUS), max(ru, MIN_LESION_RADIUS)
    rz = p.get("rz", 0.35)
    delta = p.get("delta", 0.0)
    if fam == "mass":
        centres = p.get("centres") or [(cv, cu, cz)]
        for (a, b, c) in centres:
            if p.get("oedema"):  # vasogenic oedema: fluid-like signal spreading around the mass
                halo = g.ell(a, b, 1.6 * rv, 1.6 * ru, c, 1.2 * rz, edge=0.3)
                _blend(img, halo * masks.get("brain", 1.0), T["infarct"])
            r = g.r(a, b, rv, ru, c, rz)
            if p["malignant"]:  # lobulated margin, heterogeneous
                ang = np.arctan2(g.v - a, g.u - b)
                r = r / (1 + 0.18 * np.cos(5 * ang + p.get("phase", 0.0)))
            m = np.clip(0.5 + (1 - r) / 0.16, 0, 1)
            val = T["mass"] + delta + (0.06 * g.texture(rng, p.get("freq", 8.0)) if p["malignant"] else 0.0)
            if p.get("ring"):
                val = val - (T["mass"] - T["soft"]) * np.clip(1.6 - 2.2 * r, 0, 1)
            if "mask" in p and p["mask"] in masks:
                m = np.maximum(m * 0.5, m * masks[p["mask"]])
            _blend(img, m, val)
    elif fam == "patchy":
        tex = g.texture(rng, p.get("freq", 6.0))
        sides = (-1, 1) if p.get("bilateral") else (1,)
        region = masks.get(p.get("mask", "lung"), 1.0)
        tissue = T[p.get("tissue", "consolidation")]
        for s in sides:
            m = g.ell(cv, s * cu, rv, ru, cz, rz, edge=0.25) * np.clip(0.6 + 0.6 * tex, 0, 1) * region
            _blend(img, m * min(1.0, p.get("density", 1.0)), tissue + delta + 0.1 * (p.get("density", 1.0) - 1))
    elif fam == "abscess":
        r = g.r(cv, cu, rv, ru, cz, rz)
        _blend(img, np.clip(0.5 + (1 - r) / 0.2, 0, 1), T["consolidation"] + 0.1)
        inner = np.clip(0.5 + (0.65 - r) / 0.1, 0, 1)
        _blend(img, inner * (g.v < cv), T["air"])
        _blend(img, inner * (g.v >= cv), T["fluid"])
    elif fam == "pleural":
        lung = masks.get("lung", np.zeros_like(img))
        side = np.clip(0.5 + p["cu_sign"] * g.u / 0.05, 0, 1)
        if "level" in p:  # effusion: the lung base fills with fluid, meniscus curving up laterally
            surface = p["level"] - 0.5 * np.abs(g.u - p["cu_sign"] * 0.42) ** 2 * 2
            m = lung * side * np.clip((g.v - surface) / 0.05, 0, 1)
            _blend(img, m, T["fluid"] + delta)
        else:             # pneumothorax: a peripheral air pocket without lung markings
            m = lung * side * g.ell(cv, cu, rv, ru, edge=0.04)
            _blend(img, m, T["air"] + 0.02)
    elif fam == "lucency":
        lung = masks.get("lung", np.zeros_like(img))
        _blend(img, lung * 0.8 * p.get("density", 1.0), T["air"] + 0.03)
        for (a, b, c) in p.get("centres", []):
            _blend(img, g.ell(a, b, 0.08, 0.08, c, 0.3) * lung, T["air"])
    elif fam == "cerebrovascular":
        brain = masks["brain"]
        tissue = T[p.get("tissue", "blood")] + delta
        shape = p.get("shape", "blob")
        if shape == "crescent":
            zf = g.zf()
            inner = g.r(0, 0, 0.72 * zf, 0.6 * zf)
            m = brain * np.clip((inner - 0.8) / 0.06, 0, 1) * g.ell(cv, cu, rv, ru + 0.2, cz, rz + 0.2, edge=0.2)
        elif shape == "ring":
            r = g.r(cv, cu, rv, ru, cz, rz + 0.2)
            m = brain * np.clip(1 - np.abs(r - 1) / 0.15, 0, 1)
        else:  # one region, or several small ones (lacunes) when the disorder has centres
            m = sum(g.ell(a, b, rv, ru, c, rz, edge=0.15) for (a, b, c) in p.get("centres") or [(cv, cu, cz)])
            m = brain * np.clip(m, 0, 1)
        _blend(img, m, tissue)
    elif fam == "vascular":
        if p.get("kind") == "aneurysm":
            r = g.r(cv, cu, rv, ru, cz, rz + 0.2)
            _blend(img, np.clip(0.5 + (1 - r) / 0.12, 0, 1), T["vessel"] + 0.12)     # wall
            _blend(img, np.clip(0.5 + (0.8 - r) / 0.12, 0, 1), T["soft"] + 0.05)     # thrombus
            _blend(img, np.clip(0.5 + (0.4 - r) / 0.12, 0, 1), T["vessel"])          # lumen
        else:  # filling defect inside the (bright) pulmonary artery
            _blend(img, g.ell(cv, cu, rv, ru, cz, rz, edge=0.2), T["soft"] - 0.1)
    elif fam == "stone":
        if p.get("obstructs"):  # the kidney above an obstructing stone: a dilated, fluid-filled pelvis
            kidney = CATEGORIES["N13"]
            _blend(img, g.ell(kidney["cv"], p["cu_sign"] * kidney["cu"], kidney["rv"], kidney["ru"], cz, rz,
                              edge=0.12), T["fluid"])
        for (a, b, c) in p.get("centres") or [(cv, cu, cz)]:
            m = g.ell(a, b, rv, ru, c, 0.15, edge=0.25)
            _blend(img, m, T["calc"] + delta)
            if mod == "Ultrasound":  # acoustic shadow below the stone
                _blend(img, 0.8 * g.ell(a + 0.25, b, 0.25, ru, edge=0.3) * (g.v > a), T["air"])
    elif fam == "fluid":
        if p.get("bilateral"):
            for s in (-1, 1):
                _blend(img, g.ell(cv, s * cu, rv, ru, cz, 0.6, edge=0.1), T["fluid"])
        else:
            _blend(img, g.ell(cv, cu, rv, ru, cz, rz, edge=0.12), T["fluid"] + delta)
    elif fam == "inflammation":
        r = g.r(cv, cu, rv, ru, cz, rz)
        _blend(img, np.clip(1.6 - 0.5 * r, 0, 1) * 0.6 * (r < 3), T["soft"] + 0.05 + 0.05 * g.texture(rng, 10))
        _blend(img, np.clip(1 - np.abs(r - 0.8) / 0.25, 0, 1), T["mass"] + delta)      # enhancing wall
        _blend(img, np.clip(0.5 + (0.55 - r) / 0.1, 0, 1), T["fluid"])
    elif fam == "fracture":
        bone = masks["bone"]
        zw = np.clip(1 - np.abs(g.z - cz) / (rz + 0.2), 0, 1) if g.z is not None else 1.0
        swelling = g.ell(cv, cu, 0.22, 0.22, cz, rz, edge=0.3) * (1 - bone) * zw
        _blend(img, swelling * 0.7, T["soft"] + 0.08)                                   # soft-tissue swelling
        m = g.band(cv, cu, p.get("angle", 0.0), p.get("rv", 0.2), FRACTURE_WIDTH) * zw
        _blend(img, np.clip(m * bone * 1.2, 0, 1), T["soft"] - 0.05 + delta)
    elif fam == "dorsopathy":
        lv = SPINE_LEVELS[p["spine_level"]]
        kind = p.get("kind")
        if kind == "bulge":  # disc material pushed back into the canal, dark against the CSF on MRI
            _blend(img, g.ell(lv + 0.18, 0.2, 0.09, 0.2, cz, 0.6, edge=0.1), T["soft"] * 0.85 + T["fluid"] * 0.15)
        elif kind == "stenosis":
            _blend(img, g.ell(lv + 0.18, 0.25, 0.16, 0.09, cz, 0.7, edge=0.1, p=4), T["bone"] * 0.6 + T["soft"] * 0.4)
        # "slip" is drawn by the background (shifted vertebrae)
    return img


# --------------------------------------------------------------------------------------
# One scan
# --------------------------------------------------------------------------------------
def render_scan(anatomy: str, modality: str, shape: tuple, pose, lesions: list[dict], region: str,
                rng: np.random.Generator, view=(1.0, 0.0, 0.0)) -> np.ndarray:
    """Float32 image in [0, 1]: ``[H, W, D]`` for 3D (len(shape) == 3), ``[H, W]`` for 2D."""
    is3d = len(shape) == 3
    g = _Grid(shape if is3d else (*shape, 1), pose, z=is3d, view=view)
    T = TISSUE[modality]
    slip = next(((p["spine_level"], 0.17) for p in lesions if p.get("kind") == "slip"), None)
    if anatomy == "Head and Neck":
        img, masks = _head(g, T, rng, region)
    elif anatomy == "Chest":
        img, masks = _chest(g, T, rng, region, xray=modality == "X-ray")
    elif anatomy == "Abdomen and Pelvis":
        img, masks = _abdomen(g, T, rng, region)
    elif anatomy == "Spine":
        img, masks = _spine(g, T, rng, region, slip)
    else:
        img, masks = _limbs(g, T, rng, region)
    img = np.broadcast_to(img, g.shape).copy()
    for p in lesions:
        _lesion(img, masks, g, T, p, rng, modality)
    # acquisition: gain / offset, smooth bias, noise
    img = img * rng.uniform(0.9, 1.1) + rng.uniform(-0.03, 0.03)
    if modality == "MRI":
        img = img * (1 + 0.12 * g.texture(rng, 0.8, n=2))
    if modality == "Ultrasound":
        a = np.arctan2(g.iu, g.iv + 1.1)   # the fan, in image coordinates (apex above the top)
        rr = np.sqrt(g.iu ** 2 + (g.iv + 1.1) ** 2)
        fan = (np.abs(a) < 0.65) & (rr > 0.25) & (rr < 2.05)
        speckle = rng.rayleigh(math.sqrt(2 / math.pi), size=g.shape).astype(np.float32)
        img = img * (0.55 + 0.45 * speckle) * (1 - 0.2 * rr / 2) * fan
    else:
        sigma = {"CT": 0.035, "MRI": 0.03, "X-ray": 0.02}[modality]
        img = img + np.float32(sigma) * rng.standard_normal(g.shape, dtype=np.float32)
    img = np.clip(img, 0, 1).astype(np.float32)
    return img if is3d else img[..., 0]


def _save_scan(img: np.ndarray, modality: str, path: Path) -> None:
    if img.ndim == 3:  # NPY [H, W, D]: CT in Hounsfield-like int16, MRI in uint16 "signal"
        if modality == "CT":
            arr = np.round(img * 2000 - 1000).astype(np.int16)
        else:
            arr = np.round(img * 1200).astype(np.uint16)
        np.save(path, arr)
    else:
        from PIL import Image

        Image.fromarray(np.round(img * 255).astype(np.uint8), mode="L").save(path, optimize=False)


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------
def _allocate(total: int, weights: np.ndarray, floor: int) -> np.ndarray:
    """Largest-remainder allocation of ``total`` items with at least ``floor`` each."""
    k = len(weights)
    floor = min(floor, total // k)
    rest = total - floor * k
    raw = weights / weights.sum() * rest
    n = np.floor(raw).astype(int)
    order = np.argsort(-(raw - n), kind="stable")
    n[order[: rest - n.sum()]] += 1
    return n + floor


def _case_lesions(disorders: list[Disorder], rng: np.random.Generator, params=lesion_params) -> list[dict]:
    """Each disorder's lesion parameters (``params(disorder)``: family, category, variation),
    drawn for one case (side, jitter, size, ...)."""
    out = []
    for d in disorders:
        p = params(d)
        p["code"] = d.code
        side = 1 if rng.random() < 0.5 else -1
        p["cu_sign"] = side
        if p.get("lat"):
            p["cu"] = side * p.get("cu", 0.0)
        p["cv"] = p.get("cv", 0.0) + p.get("dv", 0.0) + rng.uniform(-0.04, 0.04)
        p["cu"] = p.get("cu", 0.0) + rng.uniform(-0.04, 0.04)
        p["size"] = p.get("size", 1.0) * rng.uniform(0.85, 1.2)
        p["cz_case"] = p.get("cz", 0.0) + rng.uniform(-0.3, 0.3)
        p["rz"] = rng.uniform(0.3, 0.45)
        p["phase"] = rng.uniform(0, 2 * np.pi)
        p["angle"] = p.get("angle", 0.0) * (side if p.get("lat") else 1) + rng.uniform(-0.2, 0.2)
        p["spine_level"] = int(rng.integers(0, 4))
        if p["family"] == "lucency":
            p["centres"] = [(rng.uniform(-0.3, 0.3), s * rng.uniform(0.3, 0.55), rng.uniform(-0.4, 0.4))
                            for s in rng.choice([-1, 1], size=p.get("bullae", 0))]
        elif p.get("n", 1) > 1:
            sv, su = p.get("spread", (0.2, 0.2))
            p["centres"] = [(p["cv"] + rng.uniform(-sv, sv), p["cu"] + rng.uniform(-su, su),
                             p["cz_case"] + rng.uniform(-0.3, 0.3)) for _ in range(p["n"])]
        out.append(p)
    return out


def _plan(n_cases: int, seed: int) -> list[dict]:
    """Who has what: labels, anatomy, patient, scan modalities. Deterministic given the seed."""
    rng = np.random.default_rng([seed, 0])
    n_normal = round(NORMAL_FRACTION * n_cases)
    n_abn = n_cases - n_normal
    weights = class_weights()
    counts = _allocate(n_abn, weights, floor=MIN_CASES_PER_CLASS)
    primary = [i for i, c in enumerate(counts) for _ in range(c)]
    plans = []
    for i in primary:
        d = DISORDERS[i]
        plans.append({"disorders": [d], "anatomy": d.anatomy})
    for _ in range(n_normal):
        plans.append({"disorders": [], "anatomy": ANATOMIES[int(rng.choice(len(ANATOMIES), p=[0.25, 0.3, 0.2, 0.1, 0.15]))]})
    order = rng.permutation(len(plans))
    plans = [plans[k] for k in order]
    for p in plans:  # a second disorder of the same anatomy, another category (and limb region)
        if p["disorders"] and rng.random() < SECOND_LABEL_FRACTION:
            first = p["disorders"][0]
            reg = CATEGORIES[first.code].get("region")
            cand = [j for j, d in enumerate(DISORDERS) if d.anatomy == first.anatomy and d.code != first.code
                    and CATEGORIES[d.code].get("region") in (None, reg)]
            if cand:
                w = weights[cand] / weights[cand].sum()
                p["disorders"].append(DISORDERS[int(rng.choice(cand, p=w))])
    # patients: a few come back for a second case of the same anatomy
    for k, p in enumerate(plans):
        p["patient"] = f"synth-p{k:05d}"
    singles = list(range(len(plans)))
    for k in range(len(plans)):
        if k > 0 and rng.random() < REPEAT_PATIENT_FRACTION:
            prev = [j for j in singles[:k] if j < k and plans[j]["anatomy"] == plans[k]["anatomy"]]
            if prev:
                j = prev[int(rng.integers(len(prev)))]
                plans[k]["patient"] = plans[j]["patient"]
                singles.remove(j)
                if k in singles:
                    singles.remove(k)
    return plans


def _case_scans(plan: dict, rng: np.random.Generator, raw_size, raw_depth) -> list[dict]:
    anatomy = plan["anatomy"]
    mods = ANATOMY_MODALITIES[anatomy]
    names, probs = list(mods), np.array(list(mods.values()))
    n = int(rng.choice(4, p=SCAN_COUNT_P)) + 1
    chosen = [names[int(rng.choice(len(names), p=probs / probs.sum()))] for _ in range(n)]
    visible = [rng.random() < VISIBLE_FRACTION for _ in range(n)]
    if plan["disorders"]:  # the first scan is one that shows the (first) disorder well
        best = [m for m in CATEGORIES[plan["disorders"][0].code]["best"] if m in mods] or names
        chosen[0] = best[int(rng.integers(len(best)))] if rng.random() < 0.5 else best[0]
        visible[0] = True
    perm = rng.permutation(n)
    scans = []
    for k in perm:
        mod = chosen[k]
        is3d = mod in ("CT", "MRI")
        if is3d:
            h = int(rng.integers(raw_size[0], raw_size[1] + 1))
            w = h if rng.random() < 0.7 else int(rng.integers(raw_size[0], raw_size[1] + 1))
            shape = (h, w, int(rng.integers(raw_depth[0], raw_depth[1] + 1)))
        else:
            h = int(rng.integers(raw_size[0] + 16, raw_size[1] + 33))
            shape = (h, h if rng.random() < 0.6 else int(h * rng.uniform(0.8, 1.25)))
        scans.append({"modality": mod, "shape": shape, "visible": bool(visible[k] and plan["disorders"])})
    return scans


def generate_cases(
    out_dir: str | Path,
    n_cases: int = 400,
    seed: int = 0,
    raw_size: tuple[int, int] = (48, 96),
    raw_depth: tuple[int, int] = (12, 40),
    with_defects: bool = False,
    progress: bool = False,
) -> list[Case]:
    """Write raw scans under ``out_dir/raw/`` and ``out_dir/raw/manifest.jsonl`` (paths relative to
    it); return the cases (absolute paths). ``with_defects`` appends a few broken items."""
    if n_cases < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}")
    if not (8 <= raw_size[0] <= raw_size[1]) or not (1 <= raw_depth[0] <= raw_depth[1]):
        raise ValueError(f"bad raw_size {raw_size} / raw_depth {raw_depth}: need 8 <= min <= max")
    raw = Path(out_dir) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    plans = _plan(n_cases, seed)
    poses: dict[str, tuple] = {}
    cases: list[Case] = []
    it = enumerate(plans)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(plans), desc="synth", unit="case")
    for i, plan in it:
        rng = np.random.default_rng([seed, 1, i])
        cid = f"synth-{i:05d}"
        anatomy = plan["anatomy"]
        if plan["patient"] not in poses:
            prng = np.random.default_rng([seed, 2, int(plan["patient"][-5:])])
            poses[plan["patient"]] = (prng.uniform(-0.12, 0.12), prng.uniform(0.88, 1.06),
                                      prng.uniform(-0.05, 0.05), prng.uniform(-0.05, 0.05))
        pose0 = poses[plan["patient"]]
        lesions = _case_lesions(plan["disorders"], rng)
        region = next((p["region"] for p in lesions if p.get("region")), None)
        region = region or LIMB_REGIONS[int(rng.integers(len(LIMB_REGIONS)))]
        key_z = lesions[0]["cz_case"] if lesions else rng.uniform(-0.3, 0.3)
        scans, shown = [], []
        (raw / cid).mkdir(exist_ok=True)
        for k, s in enumerate(_case_scans(plan, rng, raw_size, raw_depth)):
            pose = (pose0[0] + rng.uniform(-0.04, 0.04), pose0[1], pose0[2] + rng.uniform(-0.02, 0.02),
                    pose0[3] + rng.uniform(-0.02, 0.02))
            view = (1.0, 0.0, 0.0)
            if s["modality"] == "Ultrasound":  # a zoomed sector on the finding (or an organ)
                tgt = (lesions[0]["cv"], lesions[0]["cu"]) if s["visible"] else \
                    [(0.28, 0.42), (-0.1, -0.4), (0.22, 0.0), (0.28, -0.42)][int(rng.integers(4))]
                view = (0.55, tgt[0] - 0.1 * 0.55, tgt[1])
            les = [p for p in lesions if s["visible"]]
            if not s["visible"] and any(p.get("kind") == "slip" for p in lesions):
                les = []
            img = render_scan(anatomy, s["modality"], s["shape"], pose, les, region, rng, view)
            is3d = img.ndim == 3
            name = f"scan{k}.npy" if is3d else f"scan{k}.png"
            _save_scan(img, s["modality"], raw / cid / name)
            key = None
            if is3d:
                key = int(round((np.clip(key_z, -1, 1) + 1) / 2 * (img.shape[2] - 1)))
            plane = PLANE[anatomy] if is3d else ("frontal" if s["modality"] == "X-ray" else None)
            scans.append(Scan(paths=[f"{cid}/{name}"], modality=s["modality"], anatomy=anatomy, plane=plane,
                              is_3d=is3d, key_slice=key, id=f"{cid}-s{k}"))
            shown.append(bool(s["visible"]))
        labels = [d.name for d in plan["disorders"]] or [NORMAL]
        icd = sorted({d.code for d in plan["disorders"]})
        cases.append(Case(id=cid, scans=scans, labels=labels, icd10=icd, anatomy=anatomy,
                          patient=plan["patient"],
                          meta={"source": "synth", "seed": seed, "lesion_in_scan": shown,
                                "region": region if anatomy == "Limbs" else None}))
    if with_defects:
        cases += _defect_cases(raw, seed)
    write_manifest(cases, raw / "manifest.jsonl")
    return list(read_manifest(raw / "manifest.jsonl"))


def _defect_cases(raw: Path, seed: int) -> list[Case]:
    """Broken items for the skip report: a missing file, a constant image, a NaN volume,
    a truncated NPY (each next to one good scan), and a case with nothing usable."""
    rng = np.random.default_rng([seed, 3])
    d = raw / "defects"
    d.mkdir(exist_ok=True)
    good = render_scan("Chest", "X-ray", (64, 64), (0, 1, 0, 0), [], None, rng)
    _save_scan(good, "X-ray", d / "good.png")
    from PIL import Image

    Image.fromarray(np.full((64, 64), 128, np.uint8), mode="L").save(d / "constant.png")
    nan = render_scan("Head and Neck", "CT", (48, 48, 12), (0, 1, 0, 0), [], None, rng)
    nan[10:20, 10:20, :] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "full.npy", nan[..., :4])
    (d / "truncated.npy").write_bytes((d / "full.npy").read_bytes()[:200])
    (d / "full.npy").unlink()
    mk = lambda name, mod: Scan(paths=[f"defects/{name}"], modality=mod, anatomy="Chest")
    return [
        Case(id="defect-missing", scans=[mk("good.png", "X-ray"), mk("missing.png", "X-ray")],
             labels=[NORMAL], anatomy="Chest", meta={"source": "synth", "defect": "missing file"}),
        Case(id="defect-constant", scans=[mk("good.png", "X-ray"), mk("constant.png", "X-ray")],
             labels=[NORMAL], anatomy="Chest", meta={"source": "synth", "defect": "constant image"}),
        Case(id="defect-nan", scans=[mk("good.png", "X-ray"), mk("nan.npy", "CT")],
             labels=[NORMAL], anatomy="Chest", meta={"source": "synth", "defect": "NaN volume"}),
        Case(id="defect-truncated", scans=[mk("truncated.npy", "CT")],
             labels=[NORMAL], anatomy="Chest", meta={"source": "synth", "defect": "truncated NPY, nothing usable"}),
    ]


def synthesize(
    out_dir: str | Path,
    n_cases: int = 400,
    seed: int = 0,
    size: int = 64,
    depth: int = 8,
    progress: bool = False,
    with_defects: bool = False,
    workers: Optional[int] = None,
    overwrite: bool = False,
    **gen_kwargs,
):
    """Generate raw cases and prepare them into ``out_dir`` (a ready prepared dataset); a folder
    that holds a dataset (prepared or raw) already is replaced only with ``overwrite``.
    Returns the :class:`~raddiag.data.store.PrepareReport`."""
    from raddiag.data.errors import OutputExists
    from raddiag.data.store import prepare_cases

    out = Path(out_dir)
    if not overwrite and ((out / "meta.json").exists() or (out / "raw").is_dir() and any((out / "raw").iterdir())):
        raise OutputExists(f"{out}: holds a dataset already; pass --overwrite (overwrite=True) to replace it")
    cases = generate_cases(out_dir, n_cases, seed, with_defects=with_defects, progress=progress, **gen_kwargs)
    head_min, medium_min = label_groups(n_cases)
    # overwrite: generate_cases has just rewritten the raw cases of out_dir; its prepared part follows
    return prepare_cases(cases, out_dir, size=size, depth=depth, seed=seed, progress=progress,
                         workers=workers, head_min=head_min, medium_min=medium_min, overwrite=True)


def summary(out_dir: str | Path) -> str:
    """Human-readable summary of a prepared dataset: splits, scans, classes and groups."""
    from collections import Counter

    from raddiag.data.store import PreparedData

    data = PreparedData(out_dir)
    lines = [f"prepared dataset {data.root} ({data.size} x {data.size}, depth <= {data.depth})"]
    by_split = Counter(r["split"] for r in data.records)
    lines.append("cases: " + ", ".join(f"{s} {by_split.get(s, 0)}" for s in ("train", "val", "test")))
    scans = [s for r in data.records for s in r["scans"]]
    mods = Counter(s["modality"] for s in scans)
    n3d = sum(bool(s["is_3d"]) for s in scans)
    lines.append(f"scans: {len(scans)} ({n3d} 3D, {len(scans) - n3d} 2D); "
                 + ", ".join(f"{m} {c}" for m, c in mods.most_common()))
    anat = Counter(r.get("anatomy") for r in data.records)
    lines.append("anatomies: " + ", ".join(f"{a} {c}" for a, c in anat.most_common()))
    multi = sum(len([x for x in r["labels"] if x != NORMAL]) > 1 for r in data.records)
    normal = sum(not [x for x in r["labels"] if x != NORMAL] for r in data.records)
    lines.append(f"normal cases: {normal}; multi-label cases: {multi}")
    for gran in ("disorder", "icd10"):
        ls = data.label_space(gran)
        g = Counter(ls.groups)
        lines.append(f"{gran}: {len(ls)} classes (head >= {ls.head_min}, medium >= {ls.medium_min} training cases):"
                     f" head {g.get('head', 0)}, medium {g.get('medium', 0)}, tail {g.get('tail', 0)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# CLI: `raddiag data synth`, registered by raddiag.data.commands
# --------------------------------------------------------------------------------------
def add_synth_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "synth", help="generate a synthetic long-tailed multi-scan dataset (raw files + prepared)",
        description="Generate a synthetic dataset shaped like the real problem (several anatomies and "
                    "modalities, 1-4 scans mixing 2D and 3D, multi-label, long-tailed, real ICD-10-CM codes) "
                    "into DIR/raw and prepare it into DIR.")
    p.add_argument("--out", required=True, help="output folder (becomes a prepared dataset)")
    p.add_argument("--cases", type=int, default=400, help="number of cases (default 400)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=64, help="prepared slice size (default 64)")
    p.add_argument("--depth", type=int, default=8, help="prepared max depth (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset DIR holds already")
    p.add_argument("--with-defects", action="store_true",
                   help="add a few broken files (missing, constant, NaN, truncated) to exercise the skip report")
    from raddiag.data.synth_scale import add_scale_options

    add_scale_options(p)
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args) -> int:
    if args.cases < 1:
        raise ValueError(f"--cases must be at least 1, got {args.cases}")
    from raddiag.data.synth_scale import check_default_options, cmd_synth_scale

    if args.label_space != "default":   # the paper's generated label space (raddiag.data.synth_scale)
        return cmd_synth_scale(args)
    check_default_options(args)
    report = synthesize(args.out, n_cases=args.cases, seed=args.seed, size=args.size, depth=args.depth,
                        progress=True, with_defects=args.with_defects, overwrite=args.overwrite)
    print(summary(args.out))
    if report.skipped_scans or report.skipped_cases:
        print(f"skipped: {len(report.skipped_scans)} scans, {len(report.skipped_cases)} cases "
              f"(see {Path(args.out) / 'report.txt'})")
    return 0
