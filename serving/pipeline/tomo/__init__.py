"""Filling-defect detection in digital breast tomosynthesis (DBT) volumes, with the 2D model.

Flow for one DBT view (one volume: a stack of planes parallel to the detector):

1. :func:`run_volume` / :func:`predict_volume` (:mod:`~serving.pipeline.tomo.detect`): read
   the frames lazily in stack order (:func:`stack_order`: by height when the DICOM order is
   not the order of the planes), run the 2D detector
   (:func:`serving.pipeline.run.predict`) on every ``stride``-th frame, or on a slab of
   ``slab`` neighbouring frames reduced by their mean or maximum, holding at most ``slab``
   decoded frames plus the slab image.
2. :class:`Linker` / :func:`link_detections` (:mod:`~serving.pipeline.tomo.link`): link the
   per-frame boxes of one class that overlap between neighbouring frames (one empty frame
   may be bridged) into tracks, one :class:`TomoCandidate` per lesion: the best frame's box,
   the highest score, the best/first/last frame and the best frame's height.
3. :func:`locate_candidates` / :func:`locate_in_volume` (:mod:`~serving.pipeline.tomo.
   location`): landmarks on the mean of a few central frames, the in-plane location of
   :mod:`serving.pipeline.locate`, and the best frame's height above the breast's mid-height
   as the second coronal axis, giving clock face, quadrant, depth third and distance from
   the nipple from a single DBT view (:class:`TomoLocation`).

The volume reader is not imported: functions take a :class:`VolumeLike`
(:mod:`~serving.pipeline.tomo.volume`): ``header.number_of_frames``,
``header.frame_heights_mm`` (mm above the detector, index 0 = frame number 1),
``header.image`` (the in-plane image header) and ``frame(index) -> Image``.

Conventions: boxes ``[x1, y1, x2, y2]`` stored pixels of a frame (x = column, x2/y2
exclusive; all frames share one grid); frame indices 0-based (``*_number`` properties are
the 1-based DICOM frame numbers); heights and distances in mm.

Candidates are not thresholded at an operating point, rescored or turned into a response
here; the model's operating points were set on 2D images.

numpy and onnxruntime only; never torch, monai, scipy or ``training``.
"""

from __future__ import annotations

from serving.pipeline.tomo.detect import Predictor as Predictor
from serving.pipeline.tomo.detect import SlabMode as SlabMode
from serving.pipeline.tomo.detect import VolumeDetections as VolumeDetections
from serving.pipeline.tomo.detect import combine_slab as combine_slab
from serving.pipeline.tomo.detect import predict_volume as predict_volume
from serving.pipeline.tomo.detect import run_volume as run_volume
from serving.pipeline.tomo.link import LinkConfig as LinkConfig
from serving.pipeline.tomo.link import Linker as Linker
from serving.pipeline.tomo.link import TomoCandidate as TomoCandidate
from serving.pipeline.tomo.link import TrackPoint as TrackPoint
from serving.pipeline.tomo.link import box_overlap as box_overlap
from serving.pipeline.tomo.link import link_detections as link_detections
from serving.pipeline.tomo.location import CENTRAL_FRAMES as CENTRAL_FRAMES
from serving.pipeline.tomo.location import HEIGHT_STRETCH as HEIGHT_STRETCH
from serving.pipeline.tomo.location import TomoLocation as TomoLocation
from serving.pipeline.tomo.location import VolumeLocations as VolumeLocations
from serving.pipeline.tomo.location import central_frames as central_frames
from serving.pipeline.tomo.location import central_image as central_image
from serving.pipeline.tomo.location import height_axis as height_axis
from serving.pipeline.tomo.location import locate_candidates as locate_candidates
from serving.pipeline.tomo.location import locate_in_volume as locate_in_volume
from serving.pipeline.tomo.location import mid_height_mm as mid_height_mm
from serving.pipeline.tomo.volume import VolumeHeaderLike as VolumeHeaderLike
from serving.pipeline.tomo.volume import VolumeLike as VolumeLike
from serving.pipeline.tomo.volume import slab_bounds as slab_bounds
from serving.pipeline.tomo.volume import slab_centres as slab_centres
from serving.pipeline.tomo.volume import stack_order as stack_order

__all__ = [
    "CENTRAL_FRAMES",
    "HEIGHT_STRETCH",
    "LinkConfig",
    "Linker",
    "Predictor",
    "SlabMode",
    "TomoCandidate",
    "TomoLocation",
    "TrackPoint",
    "VolumeDetections",
    "VolumeHeaderLike",
    "VolumeLike",
    "VolumeLocations",
    "box_overlap",
    "central_frames",
    "central_image",
    "combine_slab",
    "height_axis",
    "link_detections",
    "locate_candidates",
    "locate_in_volume",
    "mid_height_mm",
    "predict_volume",
    "run_volume",
    "slab_bounds",
    "slab_centres",
    "stack_order",
]
