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
  const thumbnails = new Map();

  // ---- Sign-in: Cognito's SRP (USER_SRP_AUTH) from the page, so the password never leaves
  // it; the tokens live in this closure only (no storage), are refreshed before they expire,
  // and are dropped on sign-out.
  const cognitoEndpoint = document.body.dataset.cognitoEndpoint;
  const poolId = document.body.dataset.userPoolId;
  const clientId = document.body.dataset.clientId;
  const poolName = poolId.split("_")[1] || poolId;
  const N = BigInt("0x" +
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD" +
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED" +
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F" +
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B" +
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510" +
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7" +
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200C" +
    "BBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF");
  const G = 2n;
  const utf8 = (text) => new TextEncoder().encode(text);
  const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const SIGN_IN_ERRORS = {
    NotAuthorizedException: "Wrong email or password.",
    UserNotFoundException: "Wrong email or password.",
    PasswordResetRequiredException: "Your password must be reset before you can sign in.",
    UserNotConfirmedException: "Your account is not confirmed yet.",
    TooManyRequestsException: "Too many attempts: wait a moment and try again.",
  };
  let session = null; // { email, access, refresh, expiresAt }
  let refreshTimer = null;

  function bytesOf(n) {
    let hex = n.toString(16);
    if (hex.length % 2) hex = "0" + hex;
    // Padded as Cognito pads: a leading zero byte when the high bit is set.
    if (/^[89a-f]/.test(hex)) hex = "00" + hex;
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    return out;
  }

  function bigOf(bytes) {
    let hex = "0";
    for (const b of bytes) hex += b.toString(16).padStart(2, "0");
    return BigInt("0x" + hex);
  }

  function joined(parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  const sha256 = async (...parts) => new Uint8Array(await crypto.subtle.digest("SHA-256", joined(parts)));

  async function hmac(key, ...parts) {
    const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return new Uint8Array(await crypto.subtle.sign("HMAC", k, joined(parts)));
  }

  function modPow(base, exp, mod) {
    let result = 1n;
    base %= mod;
    while (exp > 0n) {
      if (exp & 1n) result = (result * base) % mod;
      exp >>= 1n;
      base = (base * base) % mod;
    }
    return result;
  }

  const base64 = (bytes) => btoa(String.fromCharCode(...bytes));
  const unbase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const two = (n) => String(n).padStart(2, "0");
  const srpTimestamp = (d) => DAYS[d.getUTCDay()] + " " + MONTHS[d.getUTCMonth()] + " " + d.getUTCDate() + " " +
    two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + ":" + two(d.getUTCSeconds()) + " UTC " + d.getUTCFullYear();

  class AuthError extends Error {}

  async function cognito(action, body) {
    let resp;
    try {
      resp = await fetch(cognitoEndpoint + "/", {
        method: "POST",
        headers: { "content-type": "application/x-amz-json-1.1", "x-amz-target": "AWSCognitoIdentityProviderService." + action },
        body: JSON.stringify(body),
      });
    } catch (e) {
      throw new AuthError("The sign-in service could not be reached (" + e.message + ").");
    }
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const type = String(data.__type || "").split("#").pop();
      throw new AuthError(SIGN_IN_ERRORS[type] || "Sign-in failed: " + (data.message || "HTTP " + resp.status) + ".");
    }
    return data;
  }

  // The password claim for the pool's challenge: Cognito's SRP with HKDF ("Caldera Derived Key").
  async function passwordClaim(a, A, challenge, password) {
    const B = BigInt("0x" + challenge.SRP_B);
    if (B % N === 0n) throw new AuthError("The sign-in service sent an invalid challenge.");
    const k = bigOf(await sha256(bytesOf(N), bytesOf(G)));
    const u = bigOf(await sha256(bytesOf(A), bytesOf(B)));
    const userId = challenge.USER_ID_FOR_SRP;
    const inner = await sha256(utf8(poolName + userId + ":" + password));
    const x = bigOf(await sha256(bytesOf(BigInt("0x" + challenge.SALT)), inner));
    const base = (((B - (k * modPow(G, x, N)) % N) % N) + N) % N;
    const S = modPow(base, a + u * x, N);
    const key = (await hmac(await hmac(bytesOf(u), bytesOf(S)), utf8("Caldera Derived Key"), new Uint8Array([1]))).slice(0, 16);
    const timestamp = srpTimestamp(new Date());
    const signature = await hmac(key, utf8(poolName + userId), unbase64(challenge.SECRET_BLOCK), utf8(timestamp));
    return {
      USERNAME: userId,
      PASSWORD_CLAIM_SECRET_BLOCK: challenge.SECRET_BLOCK,
      PASSWORD_CLAIM_SIGNATURE: base64(signature),
      TIMESTAMP: timestamp,
    };
  }

  function keep(email, result, refresh) {
    session = {
      email,
      access: result.AccessToken,
      refresh: result.RefreshToken || refresh,
      expiresAt: Date.now() + (result.ExpiresIn || 900) * 1000,
    };
    clearTimeout(refreshTimer);
    // Refreshed a minute before it expires.
    refreshTimer = setTimeout(refresh_, Math.max(5000, session.expiresAt - Date.now() - 60000));
  }

  async function signIn(email, password) {
    const a = bigOf(crypto.getRandomValues(new Uint8Array(128))) % N;
    const A = modPow(G, a, N);
    const started = await cognito("InitiateAuth", {
      AuthFlow: "USER_SRP_AUTH",
      ClientId: clientId,
      AuthParameters: { USERNAME: email, SRP_A: A.toString(16) },
    });
    if (started.ChallengeName !== "PASSWORD_VERIFIER") {
      throw new AuthError("Sign-in asked for " + started.ChallengeName + ", which this page does not support.");
    }
    const answered = await cognito("RespondToAuthChallenge", {
      ChallengeName: "PASSWORD_VERIFIER",
      ClientId: clientId,
      Session: started.Session,
      ChallengeResponses: await passwordClaim(a, A, started.ChallengeParameters, password),
    });
    if (!answered.AuthenticationResult) {
      throw new AuthError("Sign-in asked for " + answered.ChallengeName + ", which this page does not support.");
    }
    keep(email, answered.AuthenticationResult, null);
  }

  async function refresh_() {
    if (!session) return false;
    try {
      const out = await cognito("InitiateAuth", {
        AuthFlow: "REFRESH_TOKEN_AUTH",
        ClientId: clientId,
        AuthParameters: { REFRESH_TOKEN: session.refresh },
      });
      keep(session.email, out.AuthenticationResult, session.refresh);
      return true;
    } catch (e) {
      signOut("Your session ended: sign in again.");
      return false;
    }
  }

  function signOut(message) {
    const ending = session;
    session = null;
    clearTimeout(refreshTimer);
    if (ending && ending.refresh) {
      cognito("RevokeToken", { Token: ending.refresh, ClientId: clientId }).catch(() => {});
    }
    for (const url of thumbnails.values()) URL.revokeObjectURL(url);
    thumbnails.clear();
    for (const url of previews.values()) URL.revokeObjectURL(url);
    previews.clear();
    generation++;
    $("grid").replaceChildren();
    $("labels").replaceChildren();
    $("label-names").replaceChildren();
    setStatus("");
    nextToken = null;
    filter = null;
    $("app").hidden = true;
    $("account").hidden = true;
    $("signin").hidden = false;
    $("password").value = "";
    const box = $("signin-error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // A request to the API with the signed-in user's access token; one refresh on a 401.
  async function authorized(path, options, retried) {
    if (!session) throw new ApiError("you are signed out", 401);
    const headers = Object.assign({}, (options && options.headers) || {}, { authorization: "Bearer " + session.access });
    let resp;
    try {
      resp = await fetch(base + path, Object.assign({}, options || {}, { headers }));
    } catch (e) {
      throw new ApiError("the API could not be reached (" + e.message + ")", 0);
    }
    if (resp.status === 401 && !retried && (await refresh_())) return authorized(path, options, true);
    return resp;
  }

  async function call(path, options) {
    const resp = await authorized(path, options);
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
      const img = el("img", { alt });
      thumbnail(img, item.image_id);
      frame.append(img);
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
    body.append(deleteControls(item.image_id));
    li.replaceChildren(frame, body);
    return li;
  }

  // A private image is fetched with the token and shown as a blob: URL, made once per image.
  async function thumbnail(img, id) {
    if (!thumbnails.has(id)) {
      let resp;
      try {
        resp = await authorized("images/" + encodeURIComponent(id) + "/thumbnail");
      } catch (e) {
        return;
      }
      if (!resp.ok || thumbnails.has(id)) return;
      thumbnails.set(id, URL.createObjectURL(await resp.blob()));
    }
    img.src = thumbnails.get(id);
  }

  // Delete, then a confirmation in place: Delete again removes it for good, Keep cancels.
  function deleteControls(id) {
    const ask = el("button", { type: "button", className: "delete", textContent: "Delete" });
    ask.setAttribute("aria-label", "Delete this image");
    const box = el("div", { className: "actions" }, [ask]);
    ask.addEventListener("click", () => {
      const yes = el("button", { type: "button", className: "delete confirm", textContent: "Delete for good" });
      const no = el("button", { type: "button", className: "delete", textContent: "Keep" });
      box.replaceChildren(el("p", { className: "muted", textContent: "Delete this image and its labels?" }), yes, no);
      no.addEventListener("click", () => box.replaceChildren(ask));
      yes.addEventListener("click", () => remove(id, box));
      yes.focus();
    });
    return box;
  }

  async function remove(id, box) {
    try {
      await call("images/" + encodeURIComponent(id), { method: "DELETE" });
    } catch (e) {
      box.append(el("p", { className: "error", textContent: "The image was not deleted: " + e.message }));
      return;
    }
    for (const li of cardsOf(id)) li.remove();
    if (thumbnails.has(id)) {
      URL.revokeObjectURL(thumbnails.get(id));
      thumbnails.delete(id);
    }
    describe();
    refreshLabels();
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
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const email = $("email").value.trim();
    const box = $("signin-error");
    box.hidden = true;
    $("signin-button").disabled = true;
    try {
      await signIn(email, $("password").value);
    } catch (err) {
      box.textContent = err instanceof AuthError ? err.message : "Sign-in failed: " + err.message;
      box.hidden = false;
      return;
    } finally {
      $("signin-button").disabled = false;
      $("password").value = "";
    }
    $("who").textContent = email;
    $("signin").hidden = true;
    $("account").hidden = false;
    $("app").hidden = false;
    clearError();
    filter = null;
    nextToken = null;
    refreshLabels();
    load(true);
  });
  $("signout").addEventListener("click", () => signOut("Signed out."));
  $("more").addEventListener("click", () => load(false));
  document.addEventListener("click", (e) => {
    const target = e.target instanceof Element ? e.target.closest("button.chip") : null;
    if (target) setFilter(target.dataset.label);
  });

  $("email").focus();
})();
