"""``dckd data prepare``: the official downloads turned into the folder layout the experiment configs name.

Layout under the output root (``${data}`` in configs, i.e. ``$DCKD_DATA_ROOT`` or ``./data``)::

    DIV2K/train_HR_sub/0001_s001.png ...            BasicSR sub-images of DIV2K_train_HR
    DIV2K/train_LR_bicubic/X{s}_sub/0001_s001.png   the LR sub-image at the same place
    DIV2K/valid_HR/0801.png, valid_LR_bicubic/X{s}/0801x{s}.png   (when the source has them)
    benchmarks/{Set5,Set14,B100,Urban100,Manga109}/HR/<name>.png and LR_bicubic/X{s}/<name>x{s}.png
    GoPro/{train,test}/{input,target}/
    Rain13K/train/{input,target}/
    derain_test/{Test100,Rain100H,Rain100L,Test2800,Test1200}/{input,target}/

Every dataset folder gets ``manifest.json`` in :mod:`dckd.storage`'s format (path, size, sha256
of each file) plus a ``prepared`` record (recipe, options, a digest of the source files). A
dataset whose record matches and whose files are all there is skipped, so re-running is cheap;
anything else is rebuilt in a temporary sibling folder and renamed into place, so an interrupted
run never leaves a half-prepared dataset that looks whole.

Recipes (see ../shared/notes/datasets.md):

* DIV2K: each HR image is mod-cropped to a multiple of 12 (and of every scale; a no-op for the
  official DIV2K sizes, it keeps HR and LR grids aligned whatever the input), LR is MATLAB
  bicubic of that image (:func:`dckd.data.matlab_resize.bicubic_lr`, not the official LR files,
  which are claimed but unverified to be the same), then BasicSR ``extract_subimages``: crop 480,
  step 240, thresh_size 0 on HR and crop 480/s, step 240/s on LR, names ``<name>_s###.png``
  counted from 1 row by row, PNG compression level 3.
* SR benchmarks: layout A of the notes (EDSR ``benchmark.tar``): HR kept whole, LR per scale =
  bicubic of HR mod-cropped to the scale; evaluation crops HR top-left to scale x LR.
* GoPro, Rain13K and the deraining test sets: whole images copied byte for byte (GoPro's
  per-sequence ``blur``/``sharp`` folders are flattened to ``<sequence>_<frame>``); training
  patches are cut at random by :class:`dckd.data.TrainPatches`.

``photos`` writes a tiny stand-in for all of the above from scikit-image's colour photographs
(see :func:`photo_plan`), for tests and the CPU demo.
"""

from dckd.data.prepare.catalog import DATASET_CHOICES, DIV2K_CROP, DIV2K_STEP, SPECS
from dckd.data.prepare.jobs import load_ref, run_job, window_starts
from dckd.data.prepare.photo_plan import photo_plan
from dckd.data.prepare.photos import PHOTO_TEST, PHOTO_TRAIN, motion_blur, photo, rain_streaks
from dckd.data.prepare.plans import Options
from dckd.data.prepare.runner import Result, exit_code, expand, prepare
from dckd.data.prepare.sources import Source

__all__ = [
    "DATASET_CHOICES", "DIV2K_CROP", "DIV2K_STEP", "PHOTO_TEST", "PHOTO_TRAIN", "SPECS", "Options", "Result",
    "Source", "expand", "exit_code", "load_ref", "motion_blur", "photo", "photo_plan", "prepare",
    "rain_streaks", "run_job", "window_starts",
]
