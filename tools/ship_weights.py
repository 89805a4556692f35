"""Copy a training run's model into zsm_tf/weights/ as the weights `zsm-tf upscale` loads by
default: ``<name>.weights.h5`` and ``model_config.json`` (replacing what is there).

    python tools/ship_weights.py runs/shipped [--name zsm_realclips_small]

The run's latest checkpoint (else its final.weights.h5) is read with zsm_tf.load_model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's zsm_tf, not an installed one
WEIGHTS_DIR = ROOT / "zsm_tf" / "weights"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="training output dir, checkpoint or .weights.h5")
    parser.add_argument("--name", default="zsm_realclips_small")
    args = parser.parse_args()

    from zsm_tf.loading import load_model

    model = load_model(args.run)
    config = {**model.get_config(), "deform_impl": "auto"}
    WEIGHTS_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WEIGHTS_DIR) as tmp:
        h5 = Path(tmp) / f"{args.name}.weights.h5"
        model.save_weights(os.fspath(h5))
        (Path(tmp) / "model_config.json").write_text(json.dumps(config, indent=1) + "\n")
        for old in WEIGHTS_DIR.glob("*.weights.h5"):
            old.unlink()
        os.replace(h5, WEIGHTS_DIR / h5.name)
        os.replace(Path(tmp) / "model_config.json", WEIGHTS_DIR / "model_config.json")
    print(f"{WEIGHTS_DIR / h5.name}: {model.count_params():,} parameters, config "
          f"{json.dumps({k: config[k] for k in ('nf', 'groups', 'front_rbs', 'back_rbs', 'residual')})}")


if __name__ == "__main__":
    main()
