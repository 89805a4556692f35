"""Writes a model as a SavedModel for stock TensorFlow Serving, atomically, in version folders.

``export_model(model, "exported/zsm")`` writes ``exported/zsm/<V>/`` (``saved_model.pb``,
``variables/``, ``assets.extra/tf_serving_warmup_requests``) with the endpoints of
:mod:`zsm_tf.serving.signatures`. The graph is written by ``keras.export.ExportArchive``, which
saves exactly the variables the endpoints capture, so that the session loader of TF Serving and
``saved_model_cli`` restores them (a ``tf.Module`` holding Keras variables does not:
"Could not find variable"). The model is rebuilt with ``deform_impl="gather"`` (stock ops)
whatever it was trained with. The version is written into a temporary folder inside the base
path and renamed into place when complete and checked: TF Serving (which only looks at numeric
folder names) never sees a partial version, an existing version is never overwritten, and a
failed export leaves nothing behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from zsm_tf.errors import one_line as _one_line
from zsm_tf.serving.checks import ExportError, VersionExistsError, check_stock_ops, verify
from zsm_tf.serving.signatures import gather_model, serving_endpoints
from zsm_tf.serving.warmup import DEFAULT_WARMUP_SHAPES, warmup_requests, write_warmup

DEFAULT_OUTPUT_DIR = os.path.join("exported", "zsm")


def write_saved_model(model, path):
    """Writes both signatures of ``model`` (rebuilt on the gather path if needed) to ``path``,
    which must not exist. Only the variables and the endpoints are saved, not the Keras object."""
    import keras

    model = gather_model(model)
    archive = keras.export.ExportArchive()
    for name, (fn, input_signature) in serving_endpoints(model).items():
        archive.add_endpoint(name, fn, input_signature=input_signature)
    archive.write_out(path, verbose=False)


def existing_versions(output_dir):
    """The version numbers (numeric sub-folders) already in ``output_dir``."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(int(n) for n in os.listdir(output_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(output_dir, n)))


def next_version(output_dir):
    versions = existing_versions(output_dir)
    return versions[-1] + 1 if versions else 1


def _make_dirs(path):
    """``os.makedirs(path)``; returns the folders it created, deepest first."""
    created = []
    p = os.path.abspath(path)
    while not os.path.exists(p):
        created.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    os.makedirs(path, exist_ok=True)
    return created


def version_path(output_dir, version) -> str:
    """``output_dir/<version>``, which must not exist yet (:class:`VersionExistsError`); the one
    check, also made by the command before it loads the model."""
    if int(version) < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    final = os.path.join(os.path.abspath(output_dir), str(int(version)))
    if os.path.exists(final):
        raise VersionExistsError(int(version), final)
    return final


def export_model(model, output_dir=DEFAULT_OUTPUT_DIR, version=None, model_name=None,
                 warmup_shapes=DEFAULT_WARMUP_SHAPES, check=True):
    """Exports ``model`` to ``output_dir/<version>`` for TF Serving; returns that path.

    Args:
      model: a :class:`~zsm_tf.model.ZoomingSlowMo` (any ``deform_impl``).
      output_dir: the model's TF Serving base path.
      version: positive int; default one more than the highest version there (1 for none).
        An existing version is an error.
      model_name: ``model_spec.name`` of the warmup requests (default: ``output_dir``'s name).
      warmup_shapes: (N, H, W) of the warmup requests; empty: no warmup file.
      check: load the written SavedModel with TF Serving's session loader, run the warmup
        requests (or one small request) through both signatures and compare the float one
        with ``model`` before publishing it.
    Raises:
      ExportError (one-line message; :class:`VersionExistsError` for an existing version);
      nothing is left in ``output_dir`` then.
    """
    output_dir = os.path.abspath(output_dir)
    if version is None:
        version = next_version(output_dir)
    version = int(version)
    final = version_path(output_dir, version)
    if model_name is None:
        model_name = os.path.basename(output_dir.rstrip(os.sep)) or "zsm"
    try:
        created = _make_dirs(output_dir)
    except OSError as e:
        raise ExportError(f"cannot create {output_dir}: {e.strerror or e}") from None
    staging = None
    try:
        staging = tempfile.mkdtemp(prefix=f".export-{version}-", dir=output_dir)
        path = os.path.join(staging, "model")
        write_saved_model(model, path)
        check_stock_ops(path)
        requests = warmup_requests(warmup_shapes) if warmup_shapes else []
        if requests:
            write_warmup(path, model_name, requests)
        if check:
            verify(path, requests or warmup_requests(((2, 8, 8),)), model=model)
        if os.path.exists(final):
            raise ExportError(f"version {version} appeared in {output_dir} during the export")
        os.rename(path, final)
    except BaseException as e:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
        for d in created:  # deepest first; only folders this export made, and only if empty
            try:
                os.rmdir(d)
            except OSError:
                break
        if isinstance(e, ExportError) or not isinstance(e, Exception):
            raise
        raise ExportError(f"export failed: {type(e).__name__}: {_one_line(e)}") from e
    shutil.rmtree(staging, ignore_errors=True)
    return final


def dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
