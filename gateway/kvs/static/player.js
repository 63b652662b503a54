// Edge gateway player: lists streams (ListStreams), draws the recording (ListFragments) on a
// timeline and plays live or recorded video through an HLS session of this gateway, feeding the
// fMP4 init + media segments to Media Source Extensions. Media time is the producer timestamp in
// epoch seconds, so video.currentTime converts straight to wall-clock time.
"use strict";

const $ = (id) => document.getElementById(id);
const video = $("video");
const params = new URLSearchParams(location.search);
const state = { stream: null, mode: null, appended: 0, sessions: 0, errors: [], timeline: [], generation: 0, target: 2,
  replayWindow: Number(params.get("window")) || 300 };
window.playerState = state; // read by tests and handy in the console

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function log(message) {
  const line = `${new Date().toISOString().slice(11, 19)} ${message}\n`;
  $("log").textContent = (line + $("log").textContent).slice(0, 4000);
}

function status(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
  if (isError) { state.errors.push(message); log(message); }
}

const AUTH_ERRORS = ["MissingAuthenticationTokenException", "UnrecognizedClientException",
  "InvalidSignatureException", "IncompleteSignatureException", "AccessDeniedException"];

// The gateway's clock, learnt from its Date headers: signatures and "live" stills use it, so a
// viewer whose computer clock is off still gets in and still sees the newest pictures.
function gatewayNow() {
  return new Date(Date.now() + (state.clockSkew || 0));
}

function credentials() {
  try {
    return JSON.parse(sessionStorage.getItem("edge-gateway-credentials") || "null");
  } catch (err) {
    return null;
  }
}

// POST a JSON API call, signed with SigV4 when credentials were given (see sigv4.js).
async function api(path, body, retry = true) {
  const text = JSON.stringify(body || {});
  const headers = { "Content-Type": "application/json" };
  const creds = credentials();
  if (creds && creds.accessKey) {
    Object.assign(headers, SigV4.sign({ ...creds, service: "kinesisvideo" }, location.host, path, text, gatewayNow()));
  }
  const response = await fetch(path, { method: "POST", headers, body: text });
  const date = Date.parse(response.headers.get("Date") || "");
  if (date) state.clockSkew = date + 500 - Date.now(); // the header has whole seconds
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = data.message || data.Message || "";
    if (retry && creds && /expired|not yet current|skew/i.test(message)) return api(path, body, false); // now on its clock
    if (AUTH_ERRORS.includes(data.__type)) $("auth").open = true;
    throw new Error(`${data.__type || response.status}: ${data.message || data.Message || ""}`);
  }
  return data;
}

async function getText(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${response.status} for ${url.split("?")[0]}`);
  return response.text();
}

async function getBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${response.status} for ${url.split("?")[0]}`);
  return response.arrayBuffer();
}

// -- streams and timeline -------------------------------------------------------------------------

async function loadStreams() {
  try {
    const out = await api("/listStreams", {});
    const list = $("streams");
    list.replaceChildren();
    for (const info of out.StreamInfoList || []) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = info.StreamName;
      button.dataset.stream = info.StreamName;
      button.addEventListener("click", () => selectStream(info.StreamName, "live"));
      item.append(button);
      list.append(item);
    }
    status(`${(out.StreamInfoList || []).length} stream(s)`);
    return (out.StreamInfoList || []).map((info) => info.StreamName);
  } catch (err) {
    status(`ListStreams failed: ${err.message}`, true);
    return [];
  }
}

const TIMELINE_HOURS = 24; // the timeline shows the recording of the last day

function mergeSpans(spans) {
  spans.sort((a, b) => a[0] - b[0]);
  const out = [];
  for (const [a, b] of spans) {
    const last = out[out.length - 1];
    if (last && a - last[1] < 0.5) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

// The first call for a stream loads the last TIMELINE_HOURS; later calls only what came since.
async function loadTimeline(stream) {
  const fresh = state.timelineStream !== stream;
  const now = Date.now() / 1000;
  const from = fresh ? now - TIMELINE_HOURS * 3600 : Math.max(now - TIMELINE_HOURS * 3600, state.timelineEnd - 1);
  const spans = fresh ? [] : state.timeline.map((span) => span.slice());
  let end = fresh ? 0 : state.timelineEnd;
  let token = null;
  for (let page = 0; page < 60; page++) {
    const body = token ? { StreamName: stream, NextToken: token, MaxResults: 1000 } : {
      StreamName: stream, MaxResults: 1000,
      FragmentSelector: { FragmentSelectorType: "PRODUCER_TIMESTAMP",
        TimestampRange: { StartTimestamp: from, EndTimestamp: now + 3600 } },
    };
    const out = await api("/listFragments", body);
    for (const f of out.Fragments || []) {
      const start = f.ProducerTimestamp;
      const stop = start + f.FragmentLengthInMilliseconds / 1000;
      spans.push([start, stop]);
      end = Math.max(end, stop);
    }
    token = out.NextToken;
    if (!token) break;
  }
  if (stream !== state.stream) return; // the user moved on meanwhile
  state.timelineStream = stream;
  state.timelineEnd = end;
  state.timeline = mergeSpans(spans);
  state.motion = await loadMotion(stream);
  drawTimeline();
}

// Motion periods, when the gateway runs motion detection on this stream ([[analytics.motion]]).
async function loadMotion(stream) {
  try {
    const response = await fetch(`/analytics/motion/${encodeURIComponent(stream)}`, { cache: "no-store" });
    if (!response.ok) return [];
    const out = await response.json();
    return out.Periods.map((p) => [p.StartMillis / 1000, p.EndMillis === null ? null : p.EndMillis / 1000]);
  } catch (err) {
    return [];
  }
}

function timelineRange() {
  const spans = state.timeline;
  if (!spans.length) return null;
  const start = spans[0][0];
  const end = Math.max(spans[spans.length - 1][1], start + 1);
  return [start, end];
}

function drawTimeline() {
  const box = $("timeline");
  box.querySelectorAll(".span").forEach((el) => el.remove());
  const range = timelineRange();
  $("scale-start").textContent = range ? new Date(range[0] * 1000).toLocaleString() : "";
  $("scale-end").textContent = range ? new Date(range[1] * 1000).toLocaleString() : "";
  if (!range) return;
  const width = range[1] - range[0];
  for (const [a, b] of state.timeline) {
    const el = document.createElement("div");
    el.className = "span";
    el.style.left = `${((a - range[0]) / width) * 100}%`;
    el.style.width = `${((b - a) / width) * 100}%`;
    box.append(el);
  }
  const list = $("motion");
  list.replaceChildren();
  for (const [a, b] of state.motion || []) {
    const end = b === null ? range[1] : b;
    if (end < range[0] || a > range[1]) continue;
    const el = document.createElement("div");
    el.className = "span motion";
    el.title = `motion from ${new Date(a * 1000).toLocaleTimeString()}`;
    el.style.left = `${((a - range[0]) / width) * 100}%`;
    el.style.width = `${((end - a) / width) * 100}%`;
    el.addEventListener("click", (event) => { event.stopPropagation(); play(state.stream, "replay", a); });
    box.append(el);
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${new Date(a * 1000).toLocaleTimeString()} (${b === null ? "now" : `${Math.round(b - a)} s`})`;
    button.addEventListener("click", () => play(state.stream, "replay", a));
    list.append(button);
  }
}

$("timeline").addEventListener("click", (event) => {
  const range = timelineRange();
  if (!range || !state.stream) return;
  const rect = $("timeline").getBoundingClientRect();
  const t = range[0] + ((event.clientX - rect.left) / rect.width) * (range[1] - range[0]);
  play(state.stream, "replay", t);
});

// -- playback -------------------------------------------------------------------------------------

function parseMaster(text, baseUrl) {
  const lines = text.split("\n").map((l) => l.trim());
  const inf = lines.find((l) => l.startsWith("#EXT-X-STREAM-INF"));
  const codecs = /CODECS="([^"]+)"/.exec(inf || "");
  const uri = lines[lines.indexOf(inf) + 1];
  return { codecs: codecs ? codecs[1] : "avc1.42E01E", mediaUrl: new URL(uri, baseUrl).href };
}

function parseMedia(text, baseUrl) {
  const out = { segments: [], ended: false, target: 2, init: null };
  let duration = 0;
  let time = null;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("#EXT-X-TARGETDURATION:")) out.target = Number(line.split(":")[1]) || 2;
    else if (line.startsWith("#EXT-X-MAP:")) out.init = new URL(/URI="([^"]+)"/.exec(line)[1], baseUrl).href;
    else if (line.startsWith("#EXTINF:")) duration = parseFloat(line.slice(8));
    else if (line.startsWith("#EXT-X-PROGRAM-DATE-TIME:")) time = Date.parse(line.slice(25)) / 1000;
    else if (line === "#EXT-X-ENDLIST") out.ended = true;
    else if (line && !line.startsWith("#")) {
      const url = new URL(line, baseUrl);
      out.segments.push({ url: url.href, id: url.searchParams.get("FragmentNumber") || url.href, duration, time });
      time = null;
    }
  }
  return out;
}

function appendTo(buffer, data) {
  return new Promise((resolve, reject) => {
    const done = () => { buffer.removeEventListener("error", fail); resolve(); };
    const fail = () => { buffer.removeEventListener("updateend", done); reject(new Error("SourceBuffer append failed")); };
    buffer.addEventListener("updateend", done, { once: true });
    buffer.addEventListener("error", fail, { once: true });
    buffer.appendBuffer(data);
  });
}

function removeFrom(buffer, start, end) {
  return new Promise((resolve) => {
    buffer.addEventListener("updateend", resolve, { once: true });
    buffer.remove(start, end);
  });
}

function bufferedRangeAt(t) {
  const b = video.buffered;
  for (let i = 0; i < b.length; i++) if (t >= b.start(i) - 0.05 && t < b.end(i)) return i;
  return -1;
}

// Jump over holes in the recording (MSE does not) and keep live playback near the live edge.
function keepPlaying(live, target) {
  const b = video.buffered;
  if (!b.length) return;
  const t = video.currentTime;
  if (bufferedRangeAt(t) < 0) {
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) > t) { video.currentTime = b.start(i) + 0.01; break; }
    }
  }
  const edge = b.end(b.length - 1);
  if (live && !video.paused && edge - video.currentTime > 4 * target + 2) video.currentTime = edge - 2 * target;
  // start playback until it has begun once; after that a pause is the viewer's and stays
  if (video.paused && !video.ended && !state.playing) video.play().catch(() => {});
}

// One HLS session of this gateway: its media playlist URL and codec. LIVE follows the live edge;
// "replay" is LIVE_REPLAY from startSeconds, a window of replayWindow fragments at a time.
async function openSession(stream, mode, startSeconds) {
  const request = { StreamName: stream, Expires: 43200, DisplayFragmentTimestamp: "ALWAYS" };
  if (mode === "live") {
    request.PlaybackMode = "LIVE";
  } else {
    request.PlaybackMode = "LIVE_REPLAY";
    request.MaxMediaPlaylistFragmentResults = state.replayWindow;
    request.HLSFragmentSelector = { FragmentSelectorType: "PRODUCER_TIMESTAMP",
      TimestampRange: { StartTimestamp: startSeconds } };
  }
  const returned = new URL((await api("/getHLSStreamingSessionURL", request)).HLSStreamingSessionURL);
  // same gateway, but reached the way this page was (the advertised URL may be 127.0.0.1)
  const sessionUrl = new URL(returned.pathname + returned.search, location.origin).href;
  return parseMaster(await getText(sessionUrl), sessionUrl);
}

const AHEAD_SECONDS = 30; // fetch no further ahead of the playhead than this

async function waitForRoom(generation) {
  while (generation === state.generation && video.buffered.length &&
         video.buffered.end(video.buffered.length - 1) - video.currentTime > AHEAD_SECONDS) {
    await sleep(500);
  }
}

async function play(stream, mode, startSeconds) {
  const generation = ++state.generation;
  state.stream = stream;
  state.mode = mode;
  state.appended = 0;
  state.sessions = 0;
  state.playing = false;
  $("stream-name").textContent = stream;
  $("mode").textContent = mode === "live" ? "LIVE" : "recording";
  document.querySelectorAll("#streams button").forEach((b) => b.classList.toggle("active", b.dataset.stream === stream));
  showStills(false);
  let master;
  try {
    master = await openSession(stream, mode, startSeconds);
    state.sessions += 1;
  } catch (err) {
    if (err.message.startsWith("UnsupportedStreamMediaTypeException")) {
      await playStills(stream, mode, startSeconds, generation); // e.g. an MJPEG camera: no MSE codec
      return;
    }
    status(`no playback: ${err.message}`, true);
    return;
  }
  const mime = `video/mp4; codecs="${master.codecs}"`;
  if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
    status(`this browser cannot play ${mime}`, true);
    return;
  }
  const source = new MediaSource();
  video.src = URL.createObjectURL(source);
  await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
  const buffer = source.addSourceBuffer(mime);
  const seen = new Set();
  let initUrl = null;
  let started = false;
  let resumeFrom = null; // end of the newest appended segment (producer time, seconds)
  status(`playing ${stream} (${mode})`);
  log(`session ${mode} ${stream}, ${mime}`);
  while (generation === state.generation) {
    let playlist;
    try {
      playlist = parseMedia(await getText(master.mediaUrl), master.mediaUrl);
    } catch (err) {
      status(`playlist: ${err.message}`, true);
      if (err.message.startsWith("401") && generation === state.generation) {
        try { // the session expired (or the gateway's key changed): open a new one where this one got to
          master = await openSession(stream, mode, resumeFrom || startSeconds);
          state.sessions += 1;
          continue;
        } catch (again) {
          log(`new session: ${again.message}`);
        }
      }
      await sleep(1000); // the gateway may be restarting: try again soon
      continue;
    }
    let added = 0;
    try {
      if (playlist.init && playlist.init !== initUrl) {
        await appendTo(buffer, await getBytes(playlist.init));
        initUrl = playlist.init;
      }
      for (const segment of playlist.segments) {
        if (generation !== state.generation) return;
        if (seen.has(segment.id)) continue;
        await waitForRoom(generation);
        if (generation !== state.generation) return;
        seen.add(segment.id);
        const data = await getBytes(segment.url);
        if (video.buffered.length && video.buffered.start(0) < video.currentTime - 60) {
          await removeFrom(buffer, 0, video.currentTime - 30);
        }
        await appendTo(buffer, data);
        state.appended += 1;
        if (segment.time) resumeFrom = segment.time + segment.duration;
        added += 1;
        if (!started && video.buffered.length) {
          started = true;
          const from = startSeconds && bufferedRangeAt(startSeconds) >= 0 ? startSeconds : video.buffered.start(0);
          video.currentTime = mode === "live" ? Math.max(from, video.buffered.end(video.buffered.length - 1) - 2 * playlist.target) : from;
          video.play().catch((err) => log(`play(): ${err.message}`));
        }
      }
    } catch (err) {
      if (generation === state.generation) status(`segment: ${err.message}`, true);
      return;
    }
    if (playlist.ended) {
      if (source.readyState === "open" && !buffer.updating) source.endOfStream();
      return;
    }
    const last = playlist.segments[playlist.segments.length - 1];
    if (mode !== "live" && !added && last && last.time && playlist.segments.length >= state.replayWindow) {
      // the replay window is full and played out: continue with a session that starts where it ends
      try {
        const next = await openSession(stream, mode, last.time + last.duration);
        master = next;
        state.sessions += 1;
        log(`replay continues from ${new Date((last.time + last.duration) * 1000).toISOString()}`);
        continue;
      } catch (err) {
        log(`replay: ${err.message}`); // nothing recorded after it yet: keep polling
      }
    }
    state.target = playlist.target;
    keepPlaying(mode === "live", playlist.target);
    await sleep(Math.max(500, (playlist.target * 1000) / 2));
  }
}

function showStills(on) {
  $("still").hidden = !on;
  video.hidden = on;
  if (on) video.removeAttribute("src");
}

// Streams browsers cannot decode through MSE (MJPEG) are shown as stills, about one per second,
// from GetImages: the newest for live, stepping through the recording for replay.
async function playStills(stream, mode, startSeconds, generation) {
  showStills(true);
  state.stills = 0;
  status(`showing stills of ${stream} (its codec cannot be streamed to a browser)`);
  let cursor = startSeconds || Date.now() / 1000 - 5;
  while (generation === state.generation) {
    const now = gatewayNow().getTime() / 1000;
    const request = mode === "live"
      ? { ImageSelectorType: "SERVER_TIMESTAMP", StartTimestamp: now - 6, EndTimestamp: now + 1, SamplingInterval: 500 }
      : { ImageSelectorType: "PRODUCER_TIMESTAMP", StartTimestamp: cursor, EndTimestamp: cursor + 1, SamplingInterval: 1000 };
    try {
      const out = await api("/getImages", { StreamName: stream, Format: "JPEG", MaxResults: 20, ...request });
      const images = (out.Images || []).filter((i) => i.ImageContent);
      const latest = images[images.length - 1];
      if (latest && generation === state.generation) {
        $("still").src = `data:image/jpeg;base64,${latest.ImageContent}`;
        state.stills += 1;
        state.stillTime = latest.TimeStamp;
        $("clock").textContent = new Date(latest.TimeStamp * 1000).toLocaleString();
      }
    } catch (err) {
      status(`stills: ${err.message}`, true);
    }
    cursor += 1;
    await sleep(1000);
  }
}

async function selectStream(stream, mode, startSeconds) {
  $("live").disabled = false;
  $("play-from").disabled = false;
  state.timeline = [];
  state.timelineStream = null;
  drawTimeline();
  loadTimeline(stream).catch((err) => log(`timeline: ${err.message}`));
  await play(stream, mode, startSeconds);
}

video.addEventListener("error", () => {
  const e = video.error;
  status(`media error ${e ? e.code : "?"}: ${e && e.message ? e.message : ""}`, true);
});
video.addEventListener("waiting", () => keepPlaying(state.mode === "live", state.target));
video.addEventListener("playing", () => { state.playing = true; });

setInterval(() => {
  if (!state.stream) return;
  const t = $("still").hidden ? video.currentTime : state.stillTime || 0;
  if (t > 1e8 && $("still").hidden) $("clock").textContent = new Date(t * 1000).toLocaleString();
  const range = timelineRange();
  if (range && t >= range[0]) {
    const fraction = Math.min(1, (t - range[0]) / (range[1] - range[0]));
    $("cursor").style.left = `calc(${fraction * 100}% - 1px)`;
  }
  if (!video.seeking) keepPlaying(state.mode === "live", state.target);
}, 500);

setInterval(() => { if (state.stream) loadTimeline(state.stream).catch(() => {}); }, 15000);

$("refresh").addEventListener("click", loadStreams);
$("save-credentials").addEventListener("click", () => {
  const creds = { accessKey: $("access-key").value.trim(), secretKey: $("secret-key").value, region: $("region").value.trim() || "us-east-1" };
  sessionStorage.setItem("edge-gateway-credentials", JSON.stringify(creds));
  $("auth").open = false;
  loadStreams();
});
if (credentials()) {
  $("access-key").value = credentials().accessKey || "";
  $("region").value = credentials().region || "us-east-1";
}
$("live").addEventListener("click", () => state.stream && play(state.stream, "live"));
$("play-from").addEventListener("click", () => {
  const value = $("from").value;
  if (state.stream && value) play(state.stream, "replay", new Date(value).getTime() / 1000);
});

// ?stream=NAME[&mode=live|replay][&start=EPOCH_SECONDS] starts playback at once (links, kiosks, tests)
// &window=N sets how many fragments one replay session lists (the next one continues after it)
// With no ?stream and a single stream on the gateway, that one plays live: nothing to choose.
(async () => {
  const names = await loadStreams();
  const stream = params.get("stream");
  if (stream) {
    const mode = params.get("mode") === "replay" ? "replay" : "live";
    const start = Number(params.get("start")) || undefined;
    await selectStream(stream, mode, start);
  } else if (names.length === 1) {
    await selectStream(names[0], "live");
  }
})();
