"""The dataset world: SynthVOCA, the kit's embedded default dataset, generated in code and mirroring VOCASET.

A reader can skip this folder (the method only sees `mtk.data`'s clips) or study it, in this order:

    template.py      the face: a procedural head with FLAME's regions, identity shapes, PLY input and output
    corpus.py        the sentences (read speech, as VOCASET's TIMIT sentences)
    speech.py        espeak-ng through ctypes: audio, phoneme timings, voices, reproducible breath noise
    articulation.py  phonemes -> visemes -> coarticulated articulator curves -> basis fields on the face
    generator.py     speakers and their hidden style, one utterance, the whole dataset on disk (`generate`)
    measure.py       what needs no model: how audible style is (`style_audibility`), what the motion is
                     made of (`motion_report`)

Because the data are generated, the task's exact bounds follow from the generator (`mtk.bounds`).
Imports flow one way: the rest of the kit imports from here, never the reverse (except `mtk.paths` for
where data live and `mtk.metrics` for the FID extractor fitted with each dataset).
"""
from .generator import (AUDIBLE_FACTORS, CAPTURE_FPS, FORMAT_VERSION, GENERATOR_VERSIONS, STYLE_FACTORS, STYLE_KINDS,
                        Speaker, SynthConfig, articulate, assign_sentences, generate, load_speakers, make_speakers,
                        speak, speaker_template)
from .measure import audio_features, effort_response, lip_shapes, motion_report, style_audibility

__all__ = ["AUDIBLE_FACTORS", "CAPTURE_FPS", "FORMAT_VERSION", "GENERATOR_VERSIONS", "STYLE_FACTORS", "STYLE_KINDS",
           "Speaker", "SynthConfig", "articulate", "assign_sentences", "audio_features", "effort_response", "generate", "lip_shapes",
           "load_speakers", "make_speakers", "motion_report", "speak", "speaker_template", "style_audibility"]
