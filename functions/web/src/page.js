"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const maxDirect = Number(document.body.dataset.maxUploadBytes) || 4500000;
  const minConfidence = document.body.dataset.minConfidence || "55";
  // This page is the API's GET /, wherever the API is mounted: every call is relative to it.
  const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
  const PAGE_SIZE = 24;
  const POLL_MS = 1500;
  const POLL_FOR_MS = 120000;
  const STATUS_TEXT = {
    awaiting_upload: "Waiting for the upload…",
    processing: "Processing…",
    labeled: "Labelled",
    failed: "Not labelled",
  };
  const REASONS = {
    unsupported_image: "it is not a JPEG or PNG the label service can read",
    image_too_large: "it is larger than the label service accepts",
    image_too_small: "it is smaller than the label service accepts",
    invalid_image: "it starts like an image but does not decode",
    image_unavailable: "the stored image could not be read",
    image_rejected: "the label service refused it",
  };

  let filter = null;
  let nextToken = null;
  let generation = 0;
  const polling = new Set();
  const previews = new Map();

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function call(path, options) {
    let resp;
    try {
      resp = await fetch(base + path, options);
    } catch (e) {
      throw new ApiError("the API could not be reached (" + e.message + ")", 0);
    }
    let data = null;
    if ((resp.headers.get("content-type") || "").includes("json")) {
      try {
        data = await resp.json();
      } catch (e) {
        data = null;
      }
    }
    if (!resp.ok) {
      const message = data && data.error && data.error.message;
      throw new ApiError(message || "the API answered HTTP " + resp.status, resp.status);
    }
    return data;
  }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children || []) node.append(child);
    return node;
  }

  function showError(text) {
    const box = $("error");
    box.textContent = box.hidden ? text : box.textContent + "\n" + text;
    box.hidden = false;
  }

  function clearError() {
    $("error").textContent = "";
    $("error").hidden = true;
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const pending = (status) => status === "processing" || status === "awaiting_upload";
  const percent = (c) => (Math.round(c * 10) / 10).toFixed(1) + " %";

  function chip(name, text, label) {
    const button = el("button", { type: "button", className: "chip", textContent: text });
    button.dataset.label = name;
    button.setAttribute("aria-label", label);
    button.setAttribute("aria-pressed", String(filter !== null && filter.toLowerCase() === name.toLowerCase()));
    return el("li", {}, [button]);
  }

  function cardsOf(id) {
    return Array.from(document.querySelectorAll("li.card")).filter((c) => c.dataset.id === id);
  }

  function render(li, item) {
    li.dataset.id = item.image_id;
    li.dataset.status = item.status;
    const labels = (item.labels || []).slice().sort((a, b) => b.confidence - a.confidence);
    const frame = el("div", { className: "frame" });
    const preview = previews.get(item.image_id);
    if (item.status === "labeled") {
      const alt = labels.length ? "Photograph: " + labels.map((l) => l.name).join(", ") : "Photograph without labels";
      frame.append(el("img", { alt, loading: "lazy", src: base + "images/" + encodeURIComponent(item.image_id) + "/thumbnail" }));
    } else if (preview) {
      frame.append(el("img", { alt: "Your upload, being processed", src: preview }));
    } else {
      frame.append(el("span", { className: "muted", textContent: "No preview" }));
    }
    const state = el("p", { className: "state " + item.status, textContent: STATUS_TEXT[item.status] || "Status: " + item.status });
    const body = el("div", { className: "body" }, [state]);
    if (item.status === "labeled") {
      if (labels.length) {
        body.append(el("ul", { className: "chips" }, labels.map((l) =>
          chip(l.name, l.name + " " + percent(l.confidence), "Show images labelled " + l.name + " (" + percent(l.confidence) + " confident)"))));
      } else {
        body.append(el("p", { className: "muted", textContent: "No labels above " + minConfidence + " %" }));
      }
    } else if (item.status === "failed") {
      const why = REASONS[item.failure_reason] || "the label service could not label it";
      body.append(el("p", { className: "muted", textContent: "Not labelled because " + why + "." }));
    }
    if (item.uploaded_at) {
      const when = new Date(item.uploaded_at);
      if (!Number.isNaN(when.getTime())) {
        body.append(el("time", { className: "muted", dateTime: item.uploaded_at, textContent: "Uploaded " + when.toLocaleString() }));
      }
    }
    li.replaceChildren(frame, body);
    return li;
  }

  const card = (item) => render(el("li", { className: "card" }), item);

  function update(item) {
    for (const li of cardsOf(item.image_id)) render(li, item);
    if (!pending(item.status) && previews.has(item.image_id)) {
      URL.revokeObjectURL(previews.get(item.image_id));
      previews.delete(item.image_id);
    }
  }

  async function poll(id) {
    if (polling.has(id)) return;
    polling.add(id);
    const until = Date.now() + POLL_FOR_MS;
    try {
      while (Date.now() < until) {
        await sleep(POLL_MS);
        let item;
        try {
          item = await call("metadata/" + encodeURIComponent(id));
        } catch (e) {
          continue; // Asked again on the next round.
        }
        update(item);
        if (!pending(item.status)) {
          refreshLabels();
          return;
        }
      }
      for (const li of cardsOf(id)) {
        const state = li.querySelector(".state");
        if (state) state.textContent = "Still processing: reload the page later.";
      }
    } finally {
      polling.delete(id);
    }
  }

  async function load(reset) {
    const mine = ++generation;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (filter !== null) params.set("label", filter);
    if (!reset && nextToken) params.set("next_token", nextToken);
    $("more").disabled = true;
    setStatus(reset ? "Loading…" : "Loading more…");
    let page;
    try {
      page = await call("metadata?" + params.toString());
    } catch (e) {
      if (mine === generation) {
        setStatus("");
        $("more").disabled = false;
        showError("The images could not be listed: " + e.message);
      }
      return;
    }
    if (mine !== generation) return;
    const grid = $("grid");
    if (reset) grid.replaceChildren();
    for (const item of page.items) {
      if (cardsOf(item.image_id).length === 0) grid.append(card(item));
      if (pending(item.status)) poll(item.image_id);
    }
    nextToken = page.next_token || null;
    $("more").hidden = !nextToken;
    $("more").disabled = false;
    describe();
  }

  // What the grid shows, in words.
  function describe() {
    const n = $("grid").children.length;
    const what = filter === null ? "newest first" : "labelled \u201c" + filter + "\u201d";
    if (n === 0) {
      setStatus(filter === null ? "No images yet: upload one above." : "No images " + what + ".");
    } else {
      setStatus(n + (n === 1 ? " image, " : " images, ") + what + (nextToken ? "; more below." : "."));
    }
  }

  async function setFilter(label) {
    const wanted = (label || "").trim();
    filter = wanted === "" ? null : wanted;
    $("label").value = filter || "";
    $("clear").hidden = filter === null;
    for (const b of document.querySelectorAll("#labels .chip")) {
      b.setAttribute("aria-pressed", String(filter !== null && b.dataset.label.toLowerCase() === filter.toLowerCase()));
    }
    nextToken = null;
    await load(true);
  }

  async function refreshLabels() {
    let data;
    try {
      data = await call("labels");
    } catch (e) {
      showError("The labels could not be read: " + e.message);
      return;
    }
    $("labels").replaceChildren(...data.labels.slice(0, 40).map((l) =>
      chip(l.name, l.name + " (" + l.count + ")", "Show the " + l.count + " images labelled " + l.name)));
    $("label-names").replaceChildren(...data.labels.map((l) => el("option", { value: l.name })));
  }

  async function presigned(file) {
    const p = await call("uploads", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ content_type: file.type || "application/octet-stream", size_bytes: file.size }),
    });
    let resp;
    try {
      resp = await fetch(p.upload.url, { method: p.upload.method, headers: p.upload.headers, body: file });
    } catch (e) {
      throw new ApiError("the image could not be sent to storage (" + e.message + ")", 0);
    }
    if (!resp.ok) throw new ApiError("storage refused the image (HTTP " + resp.status + ")", resp.status);
    return { image_id: p.image_id, status: "processing" };
  }

  async function upload(file) {
    let accepted;
    try {
      if (file.size > maxDirect) {
        accepted = await presigned(file);
      } else {
        try {
          accepted = await call("upload", {
            method: "POST",
            headers: { "content-type": file.type || "application/octet-stream" },
            body: file,
          });
        } catch (e) {
          if (e.status !== 413) throw e;
          accepted = await presigned(file);
        }
      }
    } catch (e) {
      showError("\u201c" + file.name + "\u201d was not uploaded: " + e.message);
      return;
    }
    previews.set(accepted.image_id, URL.createObjectURL(file));
    if (filter !== null) await setFilter(null);
    if (cardsOf(accepted.image_id).length === 0) {
      $("grid").prepend(card({ image_id: accepted.image_id, status: accepted.status, labels: [], uploaded_at: new Date().toISOString() }));
      describe();
    }
    poll(accepted.image_id);
  }

  async function uploadAll(fileList) {
    const files = Array.from(fileList || []);
    if (files.length === 0) return;
    clearError();
    for (const file of files) await upload(file);
  }

  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    uploadAll(e.dataTransfer && e.dataTransfer.files);
  });
  // A file dropped beside the zone must not replace the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  $("file").addEventListener("change", (e) => {
    const files = Array.from(e.target.files || []);
    e.target.value = "";
    uploadAll(files);
  });
  $("filter").addEventListener("submit", (e) => {
    e.preventDefault();
    setFilter($("label").value);
  });
  $("clear").addEventListener("click", () => setFilter(null));
  $("more").addEventListener("click", () => load(false));
  document.addEventListener("click", (e) => {
    const target = e.target instanceof Element ? e.target.closest("button.chip") : null;
    if (target) setFilter(target.dataset.label);
  });

  refreshLabels();
  load(true);
})();
