// The RTAP console: watches the service over its WebSocket server, polls /health,
// and streams the browser's microphone into a /v1/audio session. No framework and
// no build step; docs/protocol.md describes every message it reads.

const STAGES = ["endpoint", "queue", "preprocess", "stt", "language", "emit"];
const MAX_TRANSCRIPTS = 200;
const MAX_EVENTS = 120;
const QUIET_EVENTS = new Set(["heartbeat", "state_changed", "transcript_partial"]);

// Everything the page knows, in one place: window.rtapConsole, for the curious and the tests.
const state = {
  token: null,
  config: null,
  serviceId: null,
  connected: false,
  reconnects: 0,
  lastSeq: { events: -1, transcripts: -1 },
  gaps: 0,
  dropped: 0,
  seen: new Set(),
  transcripts: [],
  notices: [],
  sessions: new Map(),
  mic: { active: false, sessionId: null, transcripts: [], closed: null },
  lastHeartbeat: 0,
};
window.rtapConsole = state;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};
const short = (id) => (id ? id.slice(0, 6) : "—");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// A request or a WebSocket handshake that gets no answer is given up after
// this long and tried again: without it, a connection accepted and never
// answered (a half-open socket, a port taken over by something else while
// the service restarted) left the page waiting for ever.
const ANSWER_TIMEOUT_MS = 10000;

// ------------------------------------------------------------------ access

function readToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("rtap-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
  state.token = sessionStorage.getItem("rtap-token");
}

function askForToken() {
  const form = $("token-form");
  form.hidden = false;
  return new Promise((resolve) => {
    form.onsubmit = (event) => {
      event.preventDefault();
      state.token = $("token-input").value.trim();
      sessionStorage.setItem("rtap-token", state.token);
      form.hidden = true;
      resolve();
    };
  });
}

async function api(path) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const response = await fetch(path, {
    headers,
    cache: "no-store",
    signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
  });
  if (response.status === 401) {
    const error = new Error("token");
    error.status = 401;
    throw error;
  }
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function wsUrl(path, query) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const params = new URLSearchParams(query);
  if (state.token) params.set("token", state.token);
  const q = params.toString();
  return `${scheme}://${location.hostname}:${state.config.websocket_port}${path}${q ? "?" + q : ""}`;
}

// ------------------------------------------------------------------ notices

function notice(text, level = "ok") {
  state.notices.push(text);
  const node = el("div", `notice ${level}`, text);
  $("notices").prepend(node);
  while ($("notices").children.length > 3) $("notices").lastChild.remove();
  if (level === "ok") setTimeout(() => node.remove(), 15000);
}

function setConnection(text, level) {
  const pill = $("connection");
  pill.textContent = text;
  pill.className = `pill ${level}`;
}

// ------------------------------------------------------------------ watching

async function loadConfig() {
  for (let attempt = 0; ; attempt++) {
    try {
      state.config = await api("/api/config");
      return;
    } catch (error) {
      if (error.status === 401) {
        setConnection(state.token ? "wrong token" : "token needed", "bad");
        await askForToken();
        continue;
      }
      setConnection("service unreachable", "bad");
      await sleep(backoff(attempt));
    }
  }
}

function backoff(attempt) {
  // 0.5 s, 1 s, 2 s ... capped at 8 s, with jitter so that many pages do not
  // all knock at once when a restarted service comes back.
  const base = Math.min(8000, 500 * 2 ** attempt);
  return base * (0.75 + Math.random() * 0.5);
}

async function watch() {
  let attempt = 0;
  let lostAt = null;
  for (;;) {
    await loadConfig();
    const opened = await new Promise((resolve) => {
      const ws = new WebSocket(wsUrl("/", { topics: "events,transcripts,levels" }));
      let open = false;
      const unanswered = setTimeout(() => open || ws.close(), ANSWER_TIMEOUT_MS);
      ws.onopen = () => {
        clearTimeout(unanswered);
        open = true;
        attempt = 0;
        state.connected = true;
        setConnection("live", "ok");
      };
      ws.onmessage = (event) => receive(JSON.parse(event.data), lostAt);
      ws.onclose = (event) => {
        clearTimeout(unanswered);
        state.connected = false;
        if (event.code === 1008 || event.code === 1003) notice(`Disconnected: ${event.reason}`, "bad");
        resolve(open);
      };
    });
    if (opened) lostAt = Date.now();
    const delay = backoff(attempt++);
    state.reconnects += opened ? 1 : 0;
    setConnection(`reconnecting in ${(delay / 1000).toFixed(1)} s`, "warn");
    await sleep(delay);
  }
}

function receive(message, lostAt) {
  switch (message.kind) {
    case "notice":
      return onNotice(message, lostAt);
    case "level":
      return onLevel(message);
    case "transcript":
      countSeq("transcripts", message.seq);
      return addTranscript(message, false);
    case "event":
      countSeq("events", message.seq);
      return onEvent(message);
  }
}

function countSeq(stream, seq) {
  const last = state.lastSeq[stream];
  if (last >= 0 && seq > last + 1) state.gaps += seq - last - 1;
  state.lastSeq[stream] = Math.max(last, seq);
}

async function onNotice(message, lostAt) {
  if (message.type === "messages_dropped") {
    state.dropped += message.count;
    notice(`This page fell behind: ${message.count} messages were dropped (${message.dropped_total} in all).`, "warn");
    return;
  }
  if (message.type !== "hello") return;
  // Settled before any await: live messages right behind the hello count from here.
  const previous = state.serviceId;
  const before = state.lastSeq;
  const next = message.next_seq;
  state.serviceId = message.service_id;
  state.lastSeq = { events: next.events - 1, transcripts: next.transcripts - 1 };
  $("footer-ids").textContent = `service ${message.service_id} · profile ${state.config.profile}`;
  if (previous === null) {
    await catchUp(-1, false); // what was said before the page opened
    return;
  }
  const away = lostAt ? ((Date.now() - lostAt) / 1000).toFixed(1) : "?";
  if (previous !== message.service_id) {
    // A new run counts from 0: what the old one said after our last message is gone.
    state.sessions.clear();
    const recovered = await catchUp(-1, true);
    notice(
      `The service restarted while this page was away (${away} s). The previous run's messages ` +
        `after event #${before.events} and transcript #${before.transcripts} were not received; ` +
        `the new run had sent ${next.events} events and ${next.transcripts} transcripts ` +
        `(${recovered} transcripts recovered).`,
      "warn",
    );
  } else {
    const missedEvents = Math.max(0, next.events - before.events - 1);
    const missedTranscripts = Math.max(0, next.transcripts - before.transcripts - 1);
    const recovered = await catchUp(before.transcripts, true);
    notice(
      `Reconnected after ${away} s: missed ${missedEvents} events and ${missedTranscripts} ` +
        `transcripts; ${recovered} transcripts recovered.`,
      missedTranscripts > recovered ? "warn" : "ok",
    );
  }
}

async function catchUp(afterSeq, flagged) {
  try {
    const reply = await api(`/api/transcripts?after_seq=${afterSeq}&limit=100`);
    for (const transcript of reply.transcripts) addTranscript(transcript, flagged);
    return reply.transcripts.length;
  } catch {
    return 0;
  }
}

// ------------------------------------------------------------------ sessions

function session(id, kind) {
  let s = state.sessions.get(id);
  if (!s) {
    s = { id, kind: kind || "?", state: "IDLE", wake: null, node: null };
    state.sessions.set(id, s);
  }
  if (kind) s.kind = kind;
  return s;
}

function renderSessions() {
  const list = $("sessions");
  $("session-count").textContent = state.sessions.size;
  for (const s of state.sessions.values()) {
    if (!s.node) {
      s.node = el("li", "session");
      s.node.innerHTML =
        '<div class="row"><span><span class="sid"></span><span class="kind"></span></span>' +
        '<span class="state"></span></div><div class="meter"><div class="meter-fill"></div></div>' +
        '<div class="wake"></div>';
      list.append(s.node);
    }
    s.node.classList.toggle("you", s.id === state.mic.sessionId);
    s.node.querySelector(".sid").textContent = short(s.id);
    s.node.querySelector(".kind").textContent = s.id === state.mic.sessionId ? "you" : s.kind;
    const badge = s.node.querySelector(".state");
    badge.textContent = s.state;
    badge.className = `state ${s.state}`;
    s.node.querySelector(".wake").textContent = s.wake ? `wake word “${s.wake.keyword}” ${ago(s.wake.at)}` : "";
  }
  for (const node of [...list.children]) {
    if (![...state.sessions.values()].some((s) => s.node === node)) node.remove();
  }
}

function ago(at) {
  const s = Math.round((Date.now() - at) / 1000);
  return s < 2 ? "just now" : `${s} s ago`;
}

function onLevel(message) {
  // -60 dBFS and below reads as silence on a meter; 0 dBFS is full scale.
  const width = Math.max(0, Math.min(100, ((message.rms_dbfs + 60) / 60) * 100));
  const s = state.sessions.get(message.session_id);
  const fills = [];
  if (s && s.node) fills.push(s.node.querySelector(".meter-fill"));
  if (message.session_id === state.mic.sessionId) fills.push($("mic-level"));
  for (const fill of fills) {
    fill.style.width = `${width}%`;
    fill.classList.toggle("voiced", message.voiced > 0.5);
  }
}

function onEvent(message) {
  const data = message.data || {};
  switch (message.type) {
    case "heartbeat":
      state.lastHeartbeat = Date.now();
      return;
    case "state_changed":
      session(message.session_id).state = data.to;
      renderSessions();
      return;
    case "session_started":
      session(message.session_id, data.kind);
      renderSessions();
      break;
    case "session_ended":
    case "session_failed":
      state.sessions.delete(message.session_id);
      renderSessions();
      break;
    case "wake_word":
      session(message.session_id).wake = { keyword: data.keyword, at: Date.now() };
      renderSessions();
      break;
    case "transcript_partial":
      return showPartial(message);
  }
  if (!QUIET_EVENTS.has(message.type)) logEvent(message);
}

function logEvent(message) {
  const data = message.data || {};
  const detail = data.keyword || data.reason || data.error || data.stage || data.kind || "";
  const bad = /error|fail|timeout|dropped/.test(message.type);
  const item = el("li", bad ? "error" : message.type);
  const time = new Date(message.emitted_at * 1000).toLocaleTimeString();
  item.append(`${time} `, el("b", "", message.type), ` ${short(message.session_id)} ${detail}`);
  $("events").prepend(item);
  while ($("events").children.length > MAX_EVENTS) $("events").lastChild.remove();
}

function showPartial(message) {
  const id = `partial-${message.session_id}`;
  let node = document.getElementById(id);
  if (!node) {
    node = el("div", "partial");
    node.id = id;
    $("partials").append(node);
  }
  const data = message.data || {};
  node.textContent = `${short(message.session_id)} … `;
  node.append(el("b", "", data.stable || ""), ` ${data.unstable || ""}`);
}

// ------------------------------------------------------------------ transcripts

// The words, each with its time in the session's audio on hover, when the
// session asked for word times (`"words": true`, or stt.words); else the text.
function transcriptText(t) {
  const node = el("div", "text");
  if (!t.words || !t.words.length) {
    node.textContent = t.text || "(nothing said)";
    return node;
  }
  // The text's own spelling where it splits into as many words (punctuation).
  const spelled = (t.text || "").split(/\s+/).filter(Boolean);
  const shown = spelled.length === t.words.length ? spelled : t.words.map((w) => w.word.trim());
  t.words.forEach((w, i) => {
    if (i) node.append(" ");
    const span = el("span", "word", shown[i]);
    span.title = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s`;
    node.append(span);
  });
  return node;
}

function addTranscript(t, caughtUp) {
  const key = `${state.serviceId}:${t.seq}`;
  if (state.seen.has(key)) return;
  state.seen.add(key);
  const mine = t.session_id === state.mic.sessionId;
  state.transcripts.push({ seq: t.seq, text: t.text, session_id: t.session_id, caught_up: caughtUp });
  document.getElementById(`partial-${t.session_id}`)?.remove();
  $("feed-empty").hidden = true;
  $("transcript-count").textContent = state.transcripts.length;

  const item = el("li", `transcript${caughtUp ? " caught-up" : ""}${mine ? " you" : ""}`);
  item.append(transcriptText(t));
  const meta = el("div", "meta");
  meta.append(
    el("span", "tag", mine ? "you" : `${short(t.session_id)}`),
    el("span", "tag", `${t.language} ${Math.round(t.language_confidence * 100)}%`),
    el("span", `tag ${t.sentiment}`, `${t.sentiment} ${Math.round(t.sentiment_confidence * 100)}%`),
  );
  if (t.wake_word) meta.append(el("span", "tag wake", `“${t.wake_word}”`));
  const latency = t.latency_ms || {};
  meta.append(el("span", "", `${Math.round(latency.speech_end_to_emit || latency.total || 0)} ms after speech`));
  if (latency.early) meta.append(el("span", "tag", "early"));
  if (caughtUp) meta.append(el("span", "tag", "caught up"));
  meta.append(el("span", "", new Date(t.emitted_at * 1000).toLocaleTimeString()));
  item.append(meta, latencyBar(latency));
  $("transcripts").prepend(item);
  while ($("transcripts").children.length > MAX_TRANSCRIPTS) $("transcripts").lastChild.remove();

  if (mine) {
    state.mic.transcripts.push(t.text);
    $("mine").prepend(el("li", "", t.text));
  }
}

function latencyBar(latency) {
  const wrap = el("div");
  const bar = el("div", "latency");
  const total = STAGES.reduce((sum, stage) => sum + (latency[stage] || 0), 0) || 1;
  const legend = el("div", "legend");
  for (const stage of STAGES) {
    const ms = latency[stage] || 0;
    if (ms <= 0) continue;
    const part = el("span", `lat-${stage}`);
    part.style.width = `${(ms / total) * 100}%`;
    part.title = `${stage}: ${ms.toFixed(0)} ms`;
    bar.append(part);
    const key = el("span");
    key.append(el("i", `lat-${stage}`), `${stage} ${ms.toFixed(0)}`);
    legend.append(key);
  }
  wrap.append(bar, legend);
  return wrap;
}

// ------------------------------------------------------------------ health

async function pollHealth() {
  for (;;) {
    try {
      const response = await fetch("/health", { cache: "no-store" });
      const health = await response.json();
      const level = health.status === "ok" ? "ok" : health.status === "degraded" ? "bad" : "warn";
      $("service").textContent = `service ${health.status}`;
      $("service").className = `pill ${level}`;
      renderHealth(health);
      const listed = new Set();
      for (const s of health.sessions.list) {
        listed.add(s.session_id);
        session(s.session_id, s.kind).state = s.state;
      }
      for (const id of [...state.sessions.keys()]) if (!listed.has(id)) state.sessions.delete(id);
      renderSessions();
    } catch {
      $("service").textContent = "service unreachable";
      $("service").className = "pill bad";
    }
    await sleep(2000);
  }
}

function renderHealth(health) {
  const stt = health.stt || {};
  const rows = [
    ["profile", state.config ? state.config.profile : "?"],
    ["model", stt.model ? `${stt.model} (${stt.device})` : "loading"],
    ["STT", stt.engines ? `${stt.busy}/${stt.engines} busy, ${stt.waiting} waiting` : "—"],
    ["sessions", `${health.sessions.active} of ${health.sessions.max}`],
    ["uptime", `${Math.round(health.uptime_s)} s`],
    ["published", `${health.outbox.published.events} events, ${health.outbox.published.transcripts} transcripts`],
    ["this page", `${state.reconnects} reconnects, ${state.gaps} gaps, ${state.dropped} dropped`],
  ];
  const dl = $("health");
  dl.replaceChildren();
  for (const [key, value] of rows) dl.append(el("dt", "", key), el("dd", "", value));
}

// ------------------------------------------------------------------ microphone

const mic = { ws: null, stream: null, context: null };

async function startMic() {
  const status = $("mic-status");
  try {
    mic.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
    });
  } catch (error) {
    status.textContent = `No microphone: ${error.message}`;
    return;
  }
  // The context resamples the microphone to 16 kHz, the pipeline's rate.
  mic.context = new AudioContext({ sampleRate: state.config.sample_rate });
  await mic.context.audioWorklet.addModule("/console/mic-worklet.js");
  const source = mic.context.createMediaStreamSource(mic.stream);
  const sender = new AudioWorkletNode(mic.context, "pcm-sender");
  const mute = mic.context.createGain();
  mute.gain.value = 0; // pulled by the graph, heard by nobody
  source.connect(sender).connect(mute).connect(mic.context.destination);

  const ws = (mic.ws = new WebSocket(wsUrl(state.config.audio_path, {})));
  ws.binaryType = "arraybuffer";
  state.mic = { active: true, sessionId: null, transcripts: state.mic.transcripts, closed: null };
  ws.onopen = () => {
    ws.send(
      JSON.stringify({
        type: "start",
        sample_rate: mic.context.sampleRate,
        encoding: "pcm_s16le",
        channels: 1,
        wake_word: false, // the button is the wake word
      }),
    );
  };
  sender.port.onmessage = (event) => {
    if (ws.readyState === WebSocket.OPEN && state.mic.sessionId) ws.send(event.data);
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.kind === "event" && message.type === "session_started") {
      state.mic.sessionId = message.session_id;
      session(message.session_id, "browser");
      renderSessions();
      status.textContent = `Listening: session ${short(message.session_id)}. Say something, then pause.`;
    } else if (message.kind === "transcript" && !state.connected) {
      addTranscript(message, false); // the watcher is down: show it from here
    }
  };
  ws.onclose = (event) => {
    state.mic.closed = [event.code, event.reason];
    if (event.code !== 1000) status.textContent = `Session closed: ${event.code} ${event.reason}`;
    stopMic(false);
  };
  $("mic").setAttribute("aria-pressed", "true");
  $("mic-label").textContent = "Stop";
}

function stopMic(ask = true) {
  if (ask && mic.ws && mic.ws.readyState === WebSocket.OPEN) {
    mic.ws.send(JSON.stringify({ type: "stop" })); // what was said is still answered
    $("mic-status").textContent = "Finishing what you said…";
  }
  if (mic.stream) mic.stream.getTracks().forEach((track) => track.stop());
  if (mic.context) mic.context.close();
  mic.stream = mic.context = null;
  state.mic.active = false;
  $("mic").setAttribute("aria-pressed", "false");
  $("mic-label").textContent = "Start talking";
  $("mic-level").style.width = "0%";
}

$("mic").addEventListener("click", () => (state.mic.active ? stopMic() : startMic()));

// ------------------------------------------------------------------ start

readToken();
pollHealth();
watch();
setInterval(renderSessions, 1000); // "3 s ago" keeps counting
