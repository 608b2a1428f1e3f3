"""The text models the package ships and loads itself: fastText language
identification and English sentiment (:mod:`.fasttext_models`, with
``data/sentiment.ftz`` and its model card).

They stay here, beside their data, rather than in ``stages/`` beside their one
user (``stages/language.py``): a stage is a pipeline step and this is the engine
it runs, as ``vad/`` is to the endpointer and ``stt/`` to the STT stage (the
layer contracts keep engines from importing stages, never the reverse). And
:mod:`.fasttext_models` must import only the standard library, ``fasttext`` and
``rtap_trio.errors``, because ``scripts/train_sentiment.py`` runs it in a
training venv without the service's dependencies: a rule that suits a package
of models, not one of stages that import trio and the settings.

Whisper's models are the whisper.cpp engine's own business:
:mod:`rtap_trio.stt.whispercpp.models`.

Nothing is imported here: importing the package costs nothing.
"""
