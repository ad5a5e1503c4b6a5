// The web chat: a client of the gateway's public HTTP API, channel "web".
//
// Send: POST /v1/messages. Replies: the session's SSE events (fetch + a small SSE
// parser rather than EventSource, which cannot send the API key), followed from
// the resume point the history route gives and resumed with Last-Event-ID after a
// dropped connection. Stop: POST /v1/chats/web/{chat}/stop. The chat id and the
// API key (when the gateway asks for one) are kept in localStorage.
"use strict";

(function () {
  const CHANNEL = "web";
  const STORE_CHAT = "gateway.chat";
  const STORE_KEY = "gateway.key";
  const RETRY_MAX_MS = 10000;

  const $ = (id) => document.getElementById(id);
  const ui = {
    log: $("log"),
    input: $("input"),
    form: $("composer"),
    send: $("send"),
    stop: $("stop"),
    newChat: $("new-chat"),
    banner: $("banner"),
    status: $("status"),
    keyDialog: $("key-dialog"),
    keyForm: $("key-form"),
    keyInput: $("key-input"),
  };

  const state = {
    chatId: localStorage.getItem(STORE_CHAT) || newChatId(),
    key: localStorage.getItem(STORE_KEY) || "",
    sessionKey: null,
    after: null,
    generation: 0, // bumped by "New chat": streams of an older chat stop
    abort: null, // aborts the event stream of the current generation
    runs: new Map(), // run_id -> {node, text, tools, done}
    awaiting: 0, // messages sent whose run has not ended yet
    renderQueued: new Set(),
  };
  localStorage.setItem(STORE_CHAT, state.chatId);

  function newChatId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  class AuthError extends Error {}

  // -- HTTP ------------------------------------------------------------------------

  async function api(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    if (options.body) headers["Content-Type"] = "application/json";
    if (state.key) headers["X-API-Key"] = state.key;
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (error) {
      throw new Error(`the gateway is not reachable (${error.message})`);
    }
    if (response.status === 401) {
      askForKey(state.key ? "That key was refused. API key:" : "This gateway needs an API key:");
      throw new AuthError("an API key is required");
    }
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try {
        const body = await response.json();
        if (body && body.error && body.error.message) message = body.error.message;
      } catch (_error) {
        // not the API's JSON error shape: keep the status line
      }
      throw new Error(message);
    }
    return response;
  }

  const chatPath = () => `/v1/chats/${CHANNEL}/${encodeURIComponent(state.chatId)}`;

  // -- status and errors -------------------------------------------------------------

  function showBanner(text) {
    ui.banner.textContent = text;
    ui.banner.hidden = false;
  }

  function hideBanner() {
    ui.banner.hidden = true;
    ui.banner.textContent = "";
  }

  function setStatus(text) {
    ui.status.textContent = text;
  }

  function refreshBusy() {
    const running = [...state.runs.values()].some((run) => !run.done);
    const busy = running || state.awaiting > 0;
    ui.stop.hidden = !busy;
    if (!busy) setStatus("");
  }

  function askForKey(prompt) {
    ui.keyDialog.querySelector("label").textContent = prompt;
    if (!ui.keyDialog.open) ui.keyDialog.showModal();
    ui.keyInput.focus();
  }

  // -- rendering -------------------------------------------------------------------

  const nearBottom = () =>
    ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;

  function append(node) {
    const stick = nearBottom();
    ui.log.appendChild(node);
    if (stick) node.scrollIntoView({ block: "end" });
  }

  function bubble(role) {
    const node = document.createElement("article");
    node.className = `msg ${role}`;
    const tools = document.createElement("div");
    tools.className = "tools";
    const body = document.createElement("div");
    body.className = "body";
    const note = document.createElement("div");
    note.className = "note";
    node.append(tools, body, note);
    return node;
  }

  function setBody(node, text) {
    const body = node.querySelector(".body");
    body.replaceChildren(window.renderMarkdown(text));
  }

  function setNote(node, text, kind) {
    const note = node.querySelector(".note");
    note.textContent = text;
    note.className = `note ${kind || ""}`;
    if (kind === "error") note.setAttribute("role", "alert");
  }

  function addTool(node, name, status) {
    const chip = document.createElement("span");
    chip.className = `tool ${status}`;
    chip.textContent = name;
    chip.title = `tool ${name}: ${status}`;
    node.querySelector(".tools").appendChild(chip);
    return chip;
  }

  function showUser(text, pending) {
    const node = bubble("user");
    setBody(node, text);
    if (pending) node.classList.add("pending");
    append(node);
    return node;
  }

  function showAssistant(message) {
    const node = bubble("assistant");
    for (const name of message.tools || []) addTool(node, name, "done");
    setBody(node, message.content || "");
    if (message.stopped) setNote(node, "Stopped.", "stopped");
    append(node);
  }

  // -- the event stream ----------------------------------------------------------------

  function runOf(event) {
    let run = state.runs.get(event.run_id);
    if (!run) {
      run = { node: bubble("assistant"), text: "", tools: new Map(), done: false };
      state.runs.set(event.run_id, run);
      append(run.node);
    }
    return run;
  }

  function queueRender(run) {
    if (state.renderQueued.has(run)) return;
    state.renderQueued.add(run);
    requestAnimationFrame(() => {
      state.renderQueued.delete(run);
      const stick = nearBottom();
      setBody(run.node, run.text);
      if (stick) run.node.scrollIntoView({ block: "end" });
    });
  }

  function finish(run) {
    // One run may answer several messages (collect, steer): nothing is awaited after
    // it; a queued message's own run.started shows Stop again.
    state.awaiting = 0;
    run.done = true;
    document.querySelectorAll(".msg.user.pending").forEach((n) => n.classList.remove("pending"));
    refreshBusy();
  }

  function onEvent(event) {
    const run = runOf(event);
    switch (event.type) {
      case "run.started":
        // A re-run after a worker crash starts the same run over.
        run.text = "";
        run.tools.clear();
        run.done = false;
        run.node.querySelector(".tools").replaceChildren();
        setNote(run.node, "");
        queueRender(run);
        setStatus("Thinking…");
        refreshBusy();
        break;
      case "text.delta":
        run.text += event.delta;
        setStatus("Writing…");
        queueRender(run);
        break;
      case "tool.started":
        run.tools.set(event.tool_call_id || event.name, addTool(run.node, event.name, "running"));
        setStatus(`Using ${event.name}…`);
        break;
      case "tool.completed":
      case "tool.failed": {
        const chip = run.tools.get(event.tool_call_id || event.name);
        const status = event.type === "tool.completed" ? "done" : "failed";
        if (chip) {
          chip.className = `tool ${status}`;
          chip.title = `tool ${event.name}: ${status}`;
        } else {
          addTool(run.node, event.name, status);
        }
        break;
      }
      case "run.completed":
        if (event.content) run.text = event.content;
        queueRender(run);
        finish(run);
        break;
      case "run.failed":
        onFailed(run, event);
        break;
      default:
        break; // reasoning and completed-text events add nothing the deltas did not show
    }
  }

  function onFailed(run, event) {
    const reason = event.result && event.result.stop_reason;
    if (reason === "cancelled") setNote(run.node, "Stopped.", "stopped");
    else if (reason === "interrupted") setNote(run.node, "Interrupted by a newer message.", "stopped");
    else setNote(run.node, `The reply failed: ${event.error || "unknown error"}`, "error");
    queueRender(run);
    finish(run);
  }

  function parseFrames(buffer, dispatch) {
    // SSE: frames end with a blank line; "id:", "event:", "data:" fields; ":" comments.
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let id = null;
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("id:")) id = line.slice(3).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) dispatch(id, data.join("\n"));
    }
    return buffer;
  }

  async function follow(generation) {
    let delay = 500;
    while (generation === state.generation) {
      try {
        await readStream(generation);
        delay = 500; // a clean end (server restart): reconnect at once
      } catch (error) {
        if (error instanceof AuthError) return;
        if (generation !== state.generation) return;
        showBanner(`Connection to the gateway lost (${error.message}). Reconnecting…`);
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(RETRY_MAX_MS, delay * 2);
      }
    }
  }

  async function readStream(generation) {
    const url = `/v1/sessions/${encodeURIComponent(state.sessionKey)}/events?follow=1`;
    const response = await api(url, {
      headers: { "Last-Event-ID": state.after },
      signal: state.abort.signal,
    });
    hideBanner();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || generation !== state.generation) return;
        buffer = parseFrames(buffer + decoder.decode(value, { stream: true }), (id, data) => {
          if (id) state.after = id;
          onEvent(JSON.parse(data));
        });
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  // -- actions -------------------------------------------------------------------------

  async function load() {
    const generation = ++state.generation;
    if (state.abort) state.abort.abort();
    state.abort = new AbortController();
    state.runs.clear();
    state.awaiting = 0;
    ui.log.replaceChildren();
    refreshBusy();
    let history;
    for (let delay = 500; ; delay = Math.min(RETRY_MAX_MS, delay * 2)) {
      try {
        history = await (await api(`${chatPath()}/history`)).json();
        break;
      } catch (error) {
        if (error instanceof AuthError || generation !== state.generation) return;
        showBanner(`Cannot load the conversation: ${error.message}. Retrying…`);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
    hideBanner();
    state.sessionKey = history.session_key;
    state.after = history.after;
    for (const message of history.messages) {
      if (message.role === "user") showUser(message.content, false);
      else showAssistant(message);
    }
    for (const message of history.pending) showUser(message.text, true);
    state.awaiting = history.pending.length ? 1 : 0;
    refreshBusy();
    follow(generation);
  }

  async function send() {
    const text = ui.input.value;
    if (!text.trim()) return;
    ui.input.value = "";
    autosize();
    const node = showUser(text, true);
    node.scrollIntoView({ block: "end" });
    state.awaiting += 1;
    refreshBusy();
    setStatus("Sending…");
    try {
      await api("/v1/messages", {
        method: "POST",
        body: JSON.stringify({ channel: CHANNEL, chat_id: state.chatId, sender_id: "web", text }),
      });
      setStatus("Waiting for the reply…");
    } catch (error) {
      state.awaiting = Math.max(0, state.awaiting - 1);
      node.classList.remove("pending");
      node.classList.add("failed");
      setNote(node, `Not sent: ${error.message}`, "error");
      refreshBusy();
    }
  }

  async function stop() {
    setStatus("Stopping…");
    try {
      const body = await (await api(`${chatPath()}/stop`, { method: "POST" })).json();
      if (!body.stopping) {
        state.awaiting = 0;
        refreshBusy();
      }
    } catch (error) {
      showBanner(`Could not stop the reply: ${error.message}`);
    }
  }

  function newChat() {
    state.chatId = newChatId();
    localStorage.setItem(STORE_CHAT, state.chatId);
    load();
    ui.input.focus();
  }

  function autosize() {
    ui.input.style.height = "auto";
    ui.input.style.height = `${Math.min(ui.input.scrollHeight, 200)}px`;
  }

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  ui.input.addEventListener("input", autosize);
  ui.stop.addEventListener("click", stop);
  ui.newChat.addEventListener("click", newChat);
  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = ui.keyInput.value.trim();
    localStorage.setItem(STORE_KEY, state.key);
    ui.keyDialog.close();
    load();
  });

  load();
})();
