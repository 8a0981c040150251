"""FLEURS (102 languages, n-way parallel read speech) from the Hugging Face layout.

Reads the ``google/fleurs`` dataset repository snapshot (``data/<lang>/<split>.tsv`` +
``data/<lang>/audio/<split>.tar.gz``) or the original FLEURS102 tarballs
(``<lang>/<split>.tsv`` + ``<lang>/audio/<split>/*.wav``). A config is one language
(``fr_fr``: ASR) or two joined on the shared sentence ``id`` (``en_us-fr_fr``: AST/S2ST).

TSV columns (no header), as read by the TFDS ``xtreme_s`` and HF ``fleurs`` loaders:
``id, file_name, raw_transcription, transcription, phonemes (characters), num_samples,
gender`` with gender ``MALE|FEMALE|OTHER``.
"""

from __future__ import annotations

import dataclasses
import functools
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from audiopalm_jax.data.corpora.common import (
    ManualCorpusBuilder,
    as_str,
    audio_feature,
    first_existing,
    iso_language,
    load_audio,
    parallel,
    read_tsv,
    require,
    utterance,
)

LANGUAGES = """
af_za am_et ar_eg as_in ast_es az_az be_by bg_bg bn_in bs_ba ca_es ceb_ph ckb_iq
cmn_hans_cn cs_cz cy_gb da_dk de_de el_gr en_us es_419 et_ee fa_ir ff_sn fi_fi fil_ph
fr_fr ga_ie gl_es gu_in ha_ng he_il hi_in hr_hr hu_hu hy_am id_id ig_ng is_is it_it
ja_jp jv_id ka_ge kam_ke kea_cv kk_kz km_kh kn_in ko_kr ky_kg lb_lu lg_ug ln_cd lo_la
lt_lt luo_ke lv_lv mi_nz mk_mk ml_in mn_mn mr_in ms_my mt_mt my_mm nb_no ne_np nl_nl
nso_za ny_mw oc_fr om_et or_in pa_in pl_pl ps_af pt_br ro_ro ru_ru sd_in sk_sk sl_si
sn_zw so_so sr_rs sv_se sw_ke ta_in te_in tg_tj th_th tr_tr uk_ua umb_ao ur_pk uz_uz
vi_vn wo_sn xh_za yo_ng yue_hant_hk zu_za
""".split()
SPLITS = ("train", "dev", "test")
# Pre-declared pairs; any "<lang>-<lang>" name is accepted too (see Fleurs.get_builder_config).
PAIRS = ("en_us-fr_fr", "en_us-de_de", "en_us-es_419", "en_us-it_it", "en_us-pt_br")

INSTRUCTIONS = """\
FLEURS is built from files you download yourself (nothing is downloaded here).
Either snapshot the Hugging Face dataset repository https://huggingface.co/datasets/google/fleurs
for the needed languages (e.g. `huggingface-cli download google/fleurs --repo-type dataset
--include "data/en_us/*" "data/fr_fr/*" --local-dir <manual_dir>`), giving
  <manual_dir>/data/<lang>/{train,dev,test}.tsv
  <manual_dir>/data/<lang>/audio/{train,dev,test}.tar.gz   (or extracted audio/<split>/*.wav)
or extract the original archives
https://storage.googleapis.com/xtreme_translations/FLEURS102/<lang>.tar.gz into <manual_dir>,
giving <manual_dir>/<lang>/{train,dev,test}.tsv and <manual_dir>/<lang>/audio/<split>/*.wav.
Languages use FLEURS codes (en_us, fr_fr, de_de, es_419, cmn_hans_cn, ...). Archives are
extracted once into <data_dir>/downloads/extracted/fleurs/.
"""


@dataclasses.dataclass(frozen=True)
class FleursRow:
    """One FLEURS recording."""

    sentence_id: int
    file_name: str
    raw_transcription: str
    transcription: str
    gender: str


@dataclasses.dataclass(eq=False)
class FleursConfig(tfds.core.BuilderConfig):
    """One FLEURS language, or two joined on the sentence id."""

    languages: tuple[str, ...] = ()


@functools.cache  # one object per name: TFDS compares configs by identity
def fleurs_config(name: str) -> FleursConfig:
    """Config for ``"<lang>"`` or ``"<lang>-<lang>"`` (FLEURS codes); ValueError if invalid."""
    langs = tuple(name.split("-"))
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown or len(langs) not in (1, 2) or len({iso_language(x) for x in langs}) != len(langs):
        raise ValueError(
            f"FLEURS config {name!r}: expected '<lang>' or '<lang>-<lang>' with two different "
            f"languages from {' '.join(LANGUAGES)}"
        )
    return FleursConfig(name=name, description=f"FLEURS {' + '.join(langs)}", languages=langs)


def read_rows(tsv: Path) -> list[FleursRow]:
    """Parses a FLEURS split TSV (7 columns, no header); keeps the first row per file."""
    rows: dict[str, FleursRow] = {}
    for f in read_tsv(tsv, header=False):
        if len(f) >= 7:  # columns: id, file, raw, normalized, phonemes, num_samples, gender
            rows.setdefault(f[1], FleursRow(int(f[0]), f[1], f[2], f[3], f[-1].lower()))
    return list(rows.values())


def language_dir(manual_dir: Path, lang: str) -> Path | None:
    """``manual_dir/data/<lang>`` (HF layout) or ``manual_dir/<lang>`` (FLEURS102 tarball)."""
    return first_existing([manual_dir / "data" / lang, manual_dir / lang])


def extract_wavs(archive: Path, dest: Path) -> Path:
    """Extracts the .wav members of ``archive`` flat into ``dest`` (once; reused after).

    Done here with ``tarfile`` because TFDS's extractor needs TensorFlow; only base names
    are written, so member paths cannot escape ``dest``.
    """
    done = dest / ".complete"
    if not done.exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".wav"):
                    (dest / Path(member.name).name).write_bytes(tar.extractfile(member).read())
        done.touch()
    return dest


def pair_items(
    by_lang: dict[str, dict[int, list[tuple[FleursRow, Path]]]],
) -> list[tuple[str, int, dict[str, tuple[FleursRow, Path]]]]:
    """Joins languages on sentence id; ``max(n_a, n_b)`` records per id, cycling the shorter
    side so every recording of either language is used."""
    langs = list(by_lang)
    common = set.intersection(*(set(by_lang[lang]) for lang in langs))
    items = []
    for sid in sorted(common):
        recs = [by_lang[lang][sid] for lang in langs]
        for k in range(max(len(r) for r in recs)):
            key = f"{sid}_{k}" if len(langs) > 1 else Path(recs[0][k][0].file_name).stem
            joined = {lang: r[k % len(r)] for lang, r in zip(langs, recs, strict=True)}
            items.append((key, sid, joined))
    return items


class Fleurs(ManualCorpusBuilder):
    """FLEURS from a Hugging Face ``google/fleurs`` snapshot or FLEURS102 tarballs."""

    BUILDER_CONFIGS = [fleurs_config(x) for x in LANGUAGES + list(PAIRS)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    DESCRIPTION = "FLEURS n-way parallel speech; audio 16 kHz mono int16."
    HOMEPAGE = "https://huggingface.co/datasets/google/fleurs"
    CITATION = "Conneau et al. FLEURS: Few-shot Learning Evaluation of Universal Representations."

    @classmethod
    def get_builder_config(cls, name: str, version: Any = None) -> tfds.core.BuilderConfig | None:
        """Declared configs, plus any valid ``<lang>-<lang>`` pair built on demand."""
        found = super().get_builder_config(name, version)
        if found is None:
            try:
                return fleurs_config(name)
            except ValueError:
                return None
        return found

    def _features(self) -> dict[str, Any]:
        text = tfds.features.Text
        per_language = {
            "file": text(doc="FLEURS wav file name"),
            "raw_transcription": text(doc="cased, punctuated (FLoRes sentence)"),
            "transcription": text(doc="normalized lowercase"),
            "gender": text(doc="male | female | other"),
            "audio": audio_feature(),
        }
        return {
            "id": text(doc="file stem (one language) or <sentence_id>_<k> (pairs)"),
            "sentence_id": tfds.features.Scalar(np.int64, doc="FLEURS id shared by languages"),
            **{lang: dict(per_language) for lang in self.builder_config.languages},
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = self._manual_root(dl_manager)
        langs = self.builder_config.languages
        dirs = {lang: language_dir(manual_dir, lang) for lang in langs}
        missing = []
        for lang, d in dirs.items():
            for s in SPLITS:
                d_ = d or manual_dir / "data" / lang
                if not (d_ / f"{s}.tsv").exists():
                    missing.append(f"{d_}/{s}.tsv")
                if not (d_ / "audio" / s).is_dir() and not (d_ / "audio" / f"{s}.tar.gz").exists():
                    missing.append(f"{d_}/audio/{s}.tar.gz (or extracted {d_}/audio/{s}/)")
        require(f"{self.name}/{self.builder_config.name}", missing, INSTRUCTIONS)
        gens = {}
        for split in SPLITS:
            by_lang: dict[str, dict[int, list[tuple[FleursRow, Path]]]] = {}
            for lang, d in dirs.items():
                audio = d / "audio" / split
                if not audio.is_dir():
                    dest = Path(dl_manager.download_dir) / "extracted" / "fleurs" / lang / split
                    audio = extract_wavs(d / "audio" / f"{split}.tar.gz", dest)
                grouped: dict[int, list[tuple[FleursRow, Path]]] = defaultdict(list)
                for row in read_rows(d / f"{split}.tsv"):
                    grouped[row.sentence_id].append((row, audio))
                by_lang[lang] = grouped
            where = ", ".join(str(d / "audio" / split) for d in dirs.values())
            gens[split] = self._generate_examples(pair_items(by_lang), where)
        return gens

    def _make_example(self, item: tuple) -> tuple[str, dict[str, Any]] | None:
        key, sid, recs = item
        example: dict[str, Any] = {"id": key, "sentence_id": sid}
        for lang, (row, audio_dir) in recs.items():
            wav = audio_dir / row.file_name
            if not wav.exists():
                return None
            example[lang] = {
                "file": row.file_name,
                "raw_transcription": row.raw_transcription,
                "transcription": row.transcription,
                "gender": row.gender,
                "audio": load_audio(wav),
            }
        return key, example


def to_parallel(record: dict[str, Any]) -> dict[str, Any]:
    """FLEURS record -> parallel view keyed by ISO 639-1 (``raw_transcription`` as text).

    FLEURS has no speaker ids, so voice names each recording:
    ``fleurs:<lang>/<file stem>`` (joined by ``|`` for pairs).
    """
    langs = [k for k, v in record.items() if isinstance(v, dict) and "audio" in v]
    voices, utterances = [], {}
    for lang in langs:
        rec = record[lang]
        voices.append(f"fleurs:{lang}/{Path(as_str(rec['file'])).stem}")
        utterances[iso_language(lang)] = utterance(rec["raw_transcription"], rec["audio"])
    return parallel(record["id"], "|".join(voices), utterances)
