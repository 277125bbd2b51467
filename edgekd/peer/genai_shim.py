"""Run ONNX Runtime GenAI's model builder with two workarounds, each applied only where it is needed:

    python -m edgekd.peer.genai_shim -i HF_DIR -o OUT -p int4 -e cpu -c CACHE   (the builder's own arguments)

1. onnxruntime-genai 0.18's builder imports transformers-5 classes at module level (e.g.
   ``Qwen3_5ForConditionalGeneration``); on transformers 4.x that import fails before anything is built.
   Each name the installed transformers lacks gets a stand-in class that refuses to be used: the
   builder only needs the name to exist unless it builds that very model family.
2. On transformers 4.x a config without RoPE scaling carries ``rope_scaling: null`` and the builder
   iterates over it (it expects 5.x's ``rope_parameters``); such a config gets the equivalent
   ``{"rope_type": "default"}`` while the builder reads it.

Run in its own process (edgekd.peer.genai.build_genai_model starts it) so that neither patch leaks
into the caller's transformers.
"""

import logging
import re
import runpy
import sys

log = logging.getLogger("edgekd.peer.genai_shim")
BUILDER = "onnxruntime_genai.models.builder"
_MISSING_NAME = re.compile(r"cannot import name '(\w+)' from 'transformers'")
_MAX_STAND_INS = 50  # a loop guard: each retry adds one name


def _stand_in(name: str) -> type:
    import transformers

    def refuse(*args, **kwargs):
        raise ImportError(f"{name} is not in transformers {transformers.__version__}: this model family needs a "
                          "newer transformers to build with onnxruntime-genai")

    return type(name, (), {"__init__": refuse, "from_pretrained": classmethod(refuse)})


def import_builders_with_stand_ins() -> list[str]:
    """Import the builder's ``builders`` package, adding a stand-in for each transformers name it lacks."""
    import onnxruntime_genai.models  # noqa: F401  (puts the builder's folder on sys.path: it imports "builders")

    added: list[str] = []
    for _ in range(_MAX_STAND_INS):
        try:
            import builders  # noqa: F401
            import builders.qwen  # noqa: F401  (builder.py imports two more names from here)
            return added
        except ImportError as exc:
            match = _MISSING_NAME.search(str(exc))
            if not match or match.group(1) in added:
                raise
            # sys.modules, not the name bound above: a failed lazy import can leave a fresh transformers module there
            setattr(sys.modules["transformers"], match.group(1), _stand_in(match.group(1)))
            added.append(match.group(1))
    raise ImportError(f"gave up after {_MAX_STAND_INS} stand-in classes for transformers names: {added}")


def default_rope_scaling() -> None:
    """Give a config whose ``rope_scaling`` is None the default RoPE entry before the builder reads it."""
    from builders.base import Model

    original = Model.make_config_init

    def make_config_init(self, config):
        if getattr(config, "rope_scaling", {}) is None and not isinstance(getattr(config, "rope_parameters", None),
                                                                          dict):
            log.info("rope_scaling is null (transformers 4.x): using {'rope_type': 'default'}")
            config.rope_scaling = {"rope_type": "default"}
        return original(self, config)

    Model.make_config_init = make_config_init


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    added = import_builders_with_stand_ins()
    if added:
        log.info("stand-in classes for names this transformers lacks: %s", ", ".join(added))
    default_rope_scaling()
    sys.argv = [BUILDER, *argv]
    runpy.run_module(BUILDER, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
