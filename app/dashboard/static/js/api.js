// The JSON API, called with the key the person signed in with. The key lives in this tab's
// sessionStorage only: never in a URL, a cookie or a log.

const KEY = "finetune.api_key";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.param = error.param || null;
    this.hint = error.hint || null;
  }
}

export const session = {
  key: () => sessionStorage.getItem(KEY),
  signedIn: () => sessionStorage.getItem(KEY) !== null,
  signIn: key => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.removeItem(KEY),
};

function authHeaders(extra = {}) {
  const key = session.key();
  return key ? {...extra, Authorization: `Bearer ${key}`} : extra;
}

/** `path` on this origin with the query's set values (null, undefined and "" left out). */
function apiUrl(path, query) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  return url;
}

/** A request to the API; answers the parsed JSON (null for 204), throws ApiError. */
export async function api(path, {method = "GET", body, query, signal, key} = {}) {
  const url = apiUrl(path, query);
  const headers = key !== undefined
    ? (key ? {Authorization: `Bearer ${key}`} : {}) : authHeaders();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {method, headers, signal,
    body: body === undefined ? undefined : JSON.stringify(body)});
  if (response.status === 204) return null;
  const parsed = await response.json().catch(() => null);
  if (!response.ok) {
    // The session's key stopped working (revoked): sign out. A key being tried at sign-in
    // (`key` given) only fails its own attempt.
    if (response.status === 401 && key === undefined) {
      window.dispatchEvent(new Event("finetune:unauthorized"));
    }
    throw new ApiError(response.status, parsed);
  }
  return parsed;
}

/** POST /v1/datasets as multipart, reporting upload progress (0..1) to `onProgress`. */
export function uploadDataset(file, {name, onProgress} = {}) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name);
    if (name) form.append("name", name);
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/datasets");
    for (const [header, value] of Object.entries(authHeaders())) {
      request.setRequestHeader(header, value);
    }
    request.upload.addEventListener("progress", event => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    });
    request.addEventListener("load", () => {
      let parsed = null;
      try { parsed = JSON.parse(request.responseText); } catch { /* not JSON */ }
      if (request.status >= 200 && request.status < 300) resolve(parsed);
      else reject(new ApiError(request.status, parsed));
    });
    request.addEventListener("error", () => reject(new ApiError(0, {error: {
      code: "network_error", message: "the upload did not reach the server"}})));
    request.send(form);
  });
}

/** Fetches `path` with the key and saves it as `filename` through the browser. */
export async function download(path, filename) {
  const response = await fetch(path, {headers: authHeaders()});
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/**
 * Follows a server-sent event stream of the API (fetch, so that the key goes in a header,
 * which EventSource cannot send). Calls onMessage(name, data, id) for each message and
 * reconnects after a drop with Last-Event-ID, so nothing is missed or repeated. Stops when
 * `signal` aborts or after an `end` message. Answers a promise that settles when it stops.
 */
export async function follow(path, {query, onMessage, onError, signal}) {
  let lastId = null;
  let retryMs = 2000;
  while (!signal.aborted) {
    try {
      const url = apiUrl(path, {...query, stream: "true"});
      const headers = authHeaders({Accept: "text/event-stream"});
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const response = await fetch(url, {headers, signal});
      if (!response.ok) {
        const error = new ApiError(response.status, await response.json().catch(() => null));
        if (response.status < 500 && response.status !== 429) throw error;
        if (onError) onError(error);
      } else {
        let ended = false;
        for await (const message of messages(response.body)) {
          if (message.retry) retryMs = message.retry;
          if (message.id !== null) lastId = message.id;
          if (message.event === null) continue;
          if (message.event === "end") ended = true;
          onMessage(message.event, JSON.parse(message.data), message.id);
        }
        if (ended) return;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError) throw error;
      if (onError) onError(error);
    }
    await new Promise(resolve => setTimeout(resolve, retryMs));
  }
}

async function* messages(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let message = {event: null, data: "", id: null, retry: null};
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        if (message.data !== "" || message.retry !== null) {
          yield {...message, event: message.data === "" ? null : message.event || "message"};
        }
        message = {event: null, data: "", id: null, retry: null};
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") message.event = value;
      else if (field === "data") message.data += (message.data ? "\n" : "") + value;
      else if (field === "id") message.id = value;
      else if (field === "retry" && /^\d+$/.test(value)) message.retry = Number(value);
    }
  }
}
