"""Benchmarks: ``python -m rtap_trio bench`` (see :mod:`rtap_trio.bench.runner`).

One module per thing measured: ``frontend`` (per-frame cost and CPU),
``latency`` (end of speech to a ZeroMQ subscriber), ``stt_ab`` (whisper.cpp
against faster-whisper), ``throughput`` (replay speed), ``memory`` (peak RSS
of the service), ``fanout`` (WebSocket delivery to many clients), ``turns``
(end-of-turn policies: turns cut, waits), ``vad``
(webrtcvad against Silero VAD in noise), ``concurrency`` (many sessions),
``remote`` (the remote STT engine over loopback against the local one);
``sections`` names them; ``report``
writes the JSON and Markdown. Nothing is imported here, so that the fan-out
child process (``python -m rtap_trio.bench.fanout``) starts light.
"""
