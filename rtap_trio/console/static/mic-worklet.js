// Runs in the audio rendering thread: the microphone (already resampled by an
// AudioContext created at 16 kHz) as 16-bit PCM, posted every 40 ms.
class PcmSender extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunk = new Int16Array(640); // 40 ms at 16 kHz: small enough to keep latency low
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const s = Math.max(-1, Math.min(1, channel[i]));
      this.chunk[this.filled++] = s < 0 ? s * 32768 : s * 32767;
      if (this.filled === this.chunk.length) {
        this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
        this.chunk = new Int16Array(640);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-sender", PcmSender);
