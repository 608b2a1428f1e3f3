"""Tools for developing RTAP, not for running it: generated speech and text metrics.

:mod:`.speechgen` makes the demo recording, the test fixtures and the bench's
audio with espeak-ng and sox; :mod:`.textmetrics` scores transcripts for the
tests and the bench. The tests, the bench (``python -m rtap_trio bench``), the
evaluation and ``scripts/make_speech.py`` use them; the service never does (an
import-linter contract in pyproject.toml keeps the core from importing this
package), so they live apart from it.
"""
