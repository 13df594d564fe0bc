// galacto viewer: send DICOM files to /v1/render and /v1/detect, draw the findings.
// Plain JavaScript, no dependencies, nothing fetched from outside this server.
//
// Lesions (findings) are solid yellow boxes; probable mimics (air bubbles, cysts,
// extravasation: not lesions) are dashed violet boxes labelled with their text, listed apart.
//
// Tomosynthesis volumes (an image with number_of_frames): one frame is shown at a time
// (frames.js: slider, wheel, keys), each fetched as a PNG from /v1/render?frame=N; a finding
// is drawn solid on its best frame and dashed on the other frames it was detected in, a
// mimic on the frames it was detected in. The first frame shown is the best frame of the
// top finding, else the central frame.
//
// For tests: <ul id="boxes"> gets one <li> per drawn finding box (data-box = x1,y1,x2,y2 in
// stored pixels, recomputed from the drawn canvas rectangle; on a volume also data-frame, the
// frame drawn, and data-kind, "best" or "range"), <ul id="mimic-boxes"> one per drawn mimic
// box, and <body data-state> goes idle -> busy -> done | error.
"use strict";

(() => {
  const KEY_STORAGE = "galacto.apiKey";
  const RENDER_MAX_SIZE = 1024;
  const BOX_COLOR = "#ffc933";
  const MIMIC_COLOR = "#b98cff";
  const NIPPLE_COLOR = "#35d0e6";

  const $ = (id) => document.getElementById(id);

  // frames.js (loaded first) defines the element builder both scripts use.
  const { el } = window.GalactoFrames;

  // ---------------------------------------------------------------- API key (sessionStorage)

  function getKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  }

  function setKey(value) {
    try {
      if (value) sessionStorage.setItem(KEY_STORAGE, value);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage disabled: the key is simply not remembered
    }
  }

  // ---------------------------------------------------------------- HTTP

  class ApiError extends Error {
    constructor(status, detail, message, body) {
      super(message);
      this.status = status;
      this.detail = detail;
      this.body = body;
    }
  }

  /**
   * fetch() with the API key; a non-2xx answer throws ApiError(detail, message). A 503 with
   * Retry-After (the service is busy) is tried again, twice at most, after the time it asks.
   */
  async function api(path, init = {}, retries = 2) {
    const headers = new Headers(init.headers || {});
    const key = getKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    let resp;
    try {
      resp = await fetch(path, { ...init, headers });
    } catch (exc) {
      throw new ApiError(0, "network_error", `the server could not be reached (${exc.message})`);
    }
    const wait = Number(resp.headers.get("Retry-After"));
    if (resp.status === 503 && retries > 0 && wait > 0 && wait <= 30) {
      await new Promise((done) => setTimeout(done, wait * 1000));
      return api(path, init, retries - 1);
    }
    if (!resp.ok) {
      let body = null;
      try {
        body = await resp.json();
      } catch {
        // not JSON (a proxy page, say)
      }
      const detail = body && typeof body.detail === "string" ? body.detail : `http_${resp.status}`;
      const message = body && typeof body.message === "string" ? body.message
        : `${resp.status} ${resp.statusText}`.trim();
      throw new ApiError(resp.status, detail, message, body);
    }
    return resp;
  }

  // ---------------------------------------------------------------- model / operating points

  let modelsLoaded = false;
  let modelHasMimicClasses = null;   // null: not known
  let modelsRetry = null;

  function describeOperatingPoint() {
    const option = $("operating-point").selectedOptions[0];
    $("op-info").textContent = option ? option.dataset.info || "" : "";
  }

  /** What is known about an operating point of /v1/models, and where its threshold is from. */
  function operatingPointInfo(op) {
    const source = op.source || "model card";
    if (source !== "model card") {
      return op.fp_per_image !== null && op.fp_per_image !== undefined
        ? `threshold from ${source}: ${op.fp_per_image} false positives per image on the `
          + "site's normal studies" : `threshold from ${source}`;
    }
    return op.sensitivity !== null && op.fp_per_image !== null
      ? `validation: sensitivity ${op.sensitivity.toFixed(2)} at ${op.fp_per_image} `
        + "false positives per image" : "";
  }

  async function loadModels() {
    clearTimeout(modelsRetry);
    const info = $("model-info");
    try {
      const models = await (await api("/v1/models")).json();
      const model = models[0];
      const select = $("operating-point");
      const previous = select.value;
      select.replaceChildren(...model.operating_points.map((op) => el("option", {
        value: op.name,
        "data-info": operatingPointInfo(op),
      }, `${op.name} (score ≥ ${op.score_threshold.toFixed(2)})`)));
      const names = model.operating_points.map((op) => op.name);
      select.value = names.includes(previous) ? previous : model.default_operating_point;
      select.disabled = false;
      describeOperatingPoint();
      modelHasMimicClasses = Array.isArray(model.classes)
        ? model.classes.some((c) => c !== "filling_defect") : null;
      info.textContent = `model: ${model.name} ${model.version}`;
      info.classList.remove("bad");
      modelsLoaded = true;
    } catch (exc) {
      info.classList.add("bad");
      if (exc.status === 503) {
        info.textContent = "model: loading on the server…";
        modelsRetry = setTimeout(loadModels, 2000);
      } else if (exc.status === 401) {
        info.textContent = "model: enter the API key";
      } else {
        info.textContent = `model: unavailable (${exc.detail})`;
      }
    }
    return modelsLoaded;
  }

  // ---------------------------------------------------------------- state and messages

  function setState(state) {
    document.body.dataset.state = state;
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(exc, context) {
    const box = $("error");
    const detail = exc instanceof ApiError ? exc.detail : "client_error";
    const items = [];
    const rejected = exc instanceof ApiError && exc.body && Array.isArray(exc.body.rejected)
      ? exc.body.rejected : [];
    if (rejected.length > 1) {
      for (const r of rejected) {
        items.push(el("li", {}, `${r.name || `part ${r.part + 1}`}: `,
          el("code", { class: "detail" }, r.detail), ` — ${r.message}`));
      }
    }
    box.replaceChildren(...[
      el("div", { class: "error-head" }, context ? `${context}: ` : "",
        el("code", { class: "detail" }, detail)),
      el("div", { class: "error-message" }, exc.message || String(exc)),
      items.length ? el("ul", {}, items) : null,
      exc instanceof ApiError && exc.status === 401
        ? el("div", { class: "hint" }, "Enter a valid API key above and try again.") : null,
    ].filter(Boolean));
    box.hidden = false;
  }

  function showWarnings(lines) {
    const box = $("warnings");
    box.replaceChildren(...lines.map((line) => el("div", {}, line)));
    box.hidden = lines.length === 0;
  }

  function clearResults() {
    $("error").hidden = true;
    showWarnings([]);
    $("results").hidden = true;
    $("images").replaceChildren();
    $("findings").tBodies[0].replaceChildren();
    $("mimics").tBodies[0].replaceChildren();
    $("fused").replaceChildren();
    $("boxes").replaceChildren();
    $("mimic-boxes").replaceChildren();
    $("raw").hidden = true;
    $("raw-json").textContent = "";
  }

  function showRaw(value) {
    $("raw-json").textContent = JSON.stringify(value, null, 2);
    $("raw").hidden = false;
  }

  // ---------------------------------------------------------------- requests for one run

  async function decodePng(blob) {
    if (typeof createImageBitmap === "function") return createImageBitmap(blob);
    const url = URL.createObjectURL(blob);
    try {
      const img = new Image();
      img.src = url;
      await img.decode();
      return img;
    } finally {
      URL.revokeObjectURL(url);
    }
  }

  /**
   * The file (frame `frame` of a volume, default the central one) as a PNG without marks, its
   * scale (stored pixels per PNG pixel) and, for a volume, the frame drawn, the number of
   * frames (null for a 2D image) and the id under which the server keeps the volume
   * (`renderId`, X-Galacto-Render-Id; null when it keeps none); ApiError on failure.
   */
  async function render(file, frame = null) {
    const which = frame ? `&frame=${frame}` : "";
    const resp = await api(`/v1/render?max_size=${RENDER_MAX_SIZE}&overlay=false${which}`, {
      method: "POST", body: file, headers: { "Content-Type": "application/dicom" },
    });
    return rendered(resp);
  }

  /**
   * Frame `frame` of the volume the server keeps under `renderId` (no upload), as render()
   * answers it; ApiError on failure (404 `render_expired` once the server forgot it).
   */
  async function renderKept(renderId, frame) {
    const resp = await api(`/v1/render/${encodeURIComponent(renderId)}?max_size=`
      + `${RENDER_MAX_SIZE}&overlay=false&frame=${frame}`);
    return rendered(resp);
  }

  /** A render response as {bitmap, scale, frame, frames, renderId}. */
  async function rendered(resp) {
    const scale = parseFloat(resp.headers.get("X-Galacto-Scale") || "");
    if (!(scale > 0)) {
      throw new ApiError(resp.status, "bad_scale",
        "the render response has no valid X-Galacto-Scale header");
    }
    const shown = parseInt(resp.headers.get("X-Galacto-Frame") || "", 10);
    const frames = parseInt(resp.headers.get("X-Galacto-Frames") || "", 10);
    return { bitmap: await decodePng(await resp.blob()), scale,
      frame: shown > 0 ? shown : null, frames: frames > 0 ? frames : null,
      renderId: resp.headers.get("X-Galacto-Render-Id") || null };
  }

  /** One file as application/dicom; several as multipart/form-data (fused per breast). */
  async function detect(files, operatingPoint) {
    const query = operatingPoint ? `?operating_point=${encodeURIComponent(operatingPoint)}` : "";
    let init;
    if (files.length === 1) {
      init = { method: "POST", body: files[0], headers: { "Content-Type": "application/dicom" } };
    } else {
      const form = new FormData();
      for (const file of files) form.append("file", file, file.name);
      init = { method: "POST", body: form };
    }
    const started = performance.now();
    const resp = await api(`/v1/detect${query}`, init);
    const result = await resp.json();
    return { result, ms: performance.now() - started };
  }

  // ---------------------------------------------------------------- drawing

  // a volume finding: the location its own view gives (the table: its phrase; a box label:
  // the clock face, or the region that stands for it, retroareolar or central, as the
  // phrase says); a 2D finding: half, depth, distance
  const CLOCKLESS = new Set(["retroareolar", "central"]);

  function locationText(f) {
    if (f.single_view_location) return f.single_view_location.phrase;
    return f.location ? f.location.text : "—";
  }

  function shortLocation(f) {
    const one = f.single_view_location;
    if (one) {
      const clock = CLOCKLESS.has(one.quadrant) || !one.clock_hour ? one.quadrant
        : `${one.clock_hour} o'clock`;
      return [clock, one.depth, `${one.distance_from_nipple_cm} cm`].filter(Boolean).join(", ");
    }
    const loc = f.location;
    if (!loc) return "";
    return [loc.half, loc.depth, `${loc.distance_from_nipple_cm} cm`].filter(Boolean).join(", ");
  }

  function fmt(value, digits) {
    return Number(value.toFixed(digits)).toString();
  }

  function overlaps(a, b) {
    return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
  }

  /**
   * A label for the box {x1, y1, x2, y2}: above it when that spot is free, else below, else
   * further up or down; `taken` (labels and boxes already on the canvas) grows by the label.
   * A label moved away from its box gets a thin leader line.
   */
  function label(ctx, text, box, font, line, taken, color = BOX_COLOR) {
    const { width, height } = ctx.canvas;
    ctx.font = `600 ${font}px system-ui, sans-serif`;
    const pad = Math.round(font * 0.3);
    const w = Math.ceil(ctx.measureText(text).width) + 2 * pad;
    const h = font + 2 * pad;
    const x = Math.min(Math.max(box.x1 - line / 2, 0), Math.max(width - w, 0));
    const above = box.y1 - line - h;
    const below = box.y2 + line;
    const tops = [above, below];
    for (let k = 1; k <= 6; k++) tops.push(above - k * (h + 1), below + k * (h + 1));
    const fits = tops.filter((t) => t >= 0 && t + h <= height);
    const free = fits.find((t) => !taken.some((r) => overlaps(r, { x, y: t, w, h })));
    const top = free ?? fits[0] ?? Math.max(above, 0);
    taken.push({ x, y: top, w, h });
    if (top !== above && top !== below) {
      ctx.lineWidth = 1;
      ctx.strokeStyle = color;
      ctx.setLineDash([]);
      ctx.beginPath();
      ctx.moveTo(box.x1, top < box.y1 ? top + h : top);
      ctx.lineTo(box.x1, top < box.y1 ? box.y1 : box.y2);
      ctx.stroke();
    }
    ctx.fillStyle = "rgba(0, 0, 0, 0.75)";
    ctx.fillRect(x, top, w, h);
    ctx.fillStyle = color;
    ctx.textBaseline = "top";
    ctx.fillText(text, x + pad, top + pad);
  }

  /**
   * Stroke the box {x1, y1, x2, y2}: a dark halo `line + 2` wide under a `line`-wide stroke of
   * `color`, both with the line dash `dash` ([] for solid).
   */
  function strokeBox(ctx, { x1, y1, x2, y2 }, line, color, dash) {
    ctx.setLineDash(dash);
    ctx.lineWidth = line + 2;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.8)";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.lineWidth = line;
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  }

  /** A mimic's label on the image and in the list, e.g. "probable air bubble 0.91". */
  function mimicText(m) {
    return `${m.text} ${m.score.toFixed(2)}`;
  }

  /** Whether a mark with `frame` (a FrameOut, or none: every frame) is on frame `n`. */
  function covers(frame, n) {
    return !frame || (frame.first <= n && n <= frame.last);
  }

  /**
   * What is drawn on frame `n` of a volume: the findings whose best frame it is (`best`),
   * those detected on it but best seen on another (`range`), the mimics detected on it; on a
   * 2D image (`n` null) every finding and mimic.
   */
  function marksOn(image, n) {
    const mimics = image.mimics || [];
    if (!n) return { best: image.findings, range: [], mimics };
    return {
      best: image.findings.filter((f) => !f.frame || f.frame.best === n),
      range: image.findings.filter((f) => f.frame && f.frame.best !== n && covers(f.frame, n)),
      mimics: mimics.filter((m) => covers(m.frame, n)),
    };
  }

  /**
   * Draw the image (or the rendered frame of a volume), its finding boxes (solid; dashed on a
   * frame other than their best), probable mimics (dashed, another colour) and nipple marker;
   * one #boxes <li> per finding box, one #mimic-boxes <li> per mimic box (those of an earlier
   * frame of the same image removed).
   */
  function drawImage(canvas, rendered, image, fileIndex) {
    const { bitmap, scale } = rendered;
    const frame = image.number_of_frames ? rendered.frame : null;
    const marks = marksOn(image, frame);
    for (const id of ["boxes", "mimic-boxes"]) {
      for (const li of [...$(id).querySelectorAll(`li[data-image="${image.index}"]`)]) li.remove();
    }
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    const line = Math.max(2, Math.round(canvas.width / 400));
    const font = Math.max(12, Math.round(canvas.width / 52));
    const list = $("boxes");
    let nipple = null;
    if (image.nipple_px) {
      const [nx, ny] = image.nipple_px.map((v) => v / scale);
      const r = Math.max(6, Math.round(canvas.width / 80));
      ctx.lineWidth = line;
      ctx.strokeStyle = NIPPLE_COLOR;
      ctx.beginPath();
      ctx.arc(nx, ny, r, 0, 2 * Math.PI);
      ctx.moveTo(nx - 2 * r, ny);
      ctx.lineTo(nx - r, ny);
      ctx.moveTo(nx + r, ny);
      ctx.lineTo(nx + 2 * r, ny);
      ctx.moveTo(nx, ny - 2 * r);
      ctx.lineTo(nx, ny - r);
      ctx.moveTo(nx, ny + r);
      ctx.lineTo(nx, ny + 2 * r);
      ctx.stroke();
      ctx.font = `600 ${font}px system-ui, sans-serif`;
      ctx.fillStyle = NIPPLE_COLOR;
      ctx.textBaseline = "top";
      ctx.fillText("N", Math.min(nx + r + 2, canvas.width - font), ny + r + 2);
      canvas.dataset.nipple = image.nipple_px.join(",");
      nipple = { x: nx - 2 * r, y: ny - 2 * r, w: 4 * r + font, h: 4 * r + font };
    }
    const toCanvas = (f) => {
      const [x1, y1, x2, y2] = f.box_px.map((v) => v / scale);
      return { f, x1, y1, x2, y2 };
    };
    const boxes = marks.best.map(toCanvas);
    const near = marks.range.map(toCanvas);
    const mimics = marks.mimics.map((m) => {
      const [x1, y1, x2, y2] = m.box_px.map((v) => v / scale);
      return { m, x1, y1, x2, y2 };
    });
    const dash = [3 * line, 2 * line];
    // dashed: findings best seen on another frame, and mimics; solid: the other findings
    for (const b of near) strokeBox(ctx, b, line, BOX_COLOR, dash);
    for (const b of mimics) strokeBox(ctx, b, line, MIMIC_COLOR, dash);
    for (const b of boxes) strokeBox(ctx, b, line, BOX_COLOR, []);
    ctx.setLineDash([]);
    // labels after all boxes, so that none hides under a later box; findings first (highest
    // score first), then mimics
    const taken = [...boxes, ...near, ...mimics].map((b) => ({ x: b.x1 - line, y: b.y1 - line,
      w: b.x2 - b.x1 + 2 * line, h: b.y2 - b.y1 + 2 * line }));
    if (nipple) taken.push(nipple);
    for (const b of [...boxes].sort((p, q) => q.f.score - p.f.score)) {
      const where = shortLocation(b.f);
      label(ctx, `${b.f.id}  ${b.f.score.toFixed(2)}${where ? ` · ${where}` : ""}`, b, font,
        line, taken);
    }
    for (const b of [...near].sort((p, q) => q.f.score - p.f.score)) {
      label(ctx, `${b.f.id} · best frame ${b.f.frame.best}`, b, font, line, taken);
    }
    for (const b of [...mimics].sort((p, q) => q.m.score - p.m.score)) {
      label(ctx, mimicText(b.m), b, font, line, taken, MIMIC_COLOR);
    }
    /** The data attributes a listed box carries: its image, file, frame, and its box in stored
     * pixels and in canvas pixels. */
    const boxData = (x1, y1, x2, y2) => ({
      "data-image": image.index,
      "data-file": fileIndex,
      "data-box": [x1, y1, x2, y2].map((v) => fmt(v * scale, 3)).join(","),
      "data-canvas-box": [x1, y1, x2, y2].map((v) => fmt(v, 3)).join(","),
      "data-frame": frame,
    });
    for (const [kind, drawn] of [["best", boxes], ["range", near]]) {
      for (const { f, x1, y1, x2, y2 } of drawn) {
        list.append(el("li", {
          ...boxData(x1, y1, x2, y2),
          "data-id": f.id,
          "data-score": f.score,
          "data-kind": frame ? kind : null,
        }, `${f.id} ${f.score}`));
      }
    }
    const mimicList = $("mimic-boxes");
    for (const { m, x1, y1, x2, y2 } of mimics) {
      mimicList.append(el("li", {
        ...boxData(x1, y1, x2, y2),
        "data-label": m.label,
        "data-score": m.score,
      }, mimicText(m)));
    }
    canvas.dataset.scale = String(scale);
    if (frame) canvas.dataset.frame = String(frame);
  }

  function imageTitle(image) {
    const title = [image.laterality, image.view].filter((v) => v && v !== "U").join(" ");
    return `${title || "image"}${image.number_of_frames ? " DBT" : ""}`;
  }

  /** The frame a volume opens on: the best frame of its top finding, else the central one. */
  function startFrame(image) {
    const framed = image.findings.filter((f) => f.frame);
    if (framed.length) return framed.reduce((a, b) => (b.score > a.score ? b : a)).frame.best;
    return Math.ceil(image.number_of_frames / 2);
  }

  /**
   * The frame controls of a volume's figure (frames.js), drawing each frame fetched on
   * `canvas`; `first` is the frame rendered already.
   */
  function volumeScroller(figure, wrap, canvas, image, fileIndex, file, first) {
    const error = el("div", { class: "frame-error", hidden: true });
    const scroller = new window.GalactoFrames.FrameScroller({
      figure, wrap, count: image.number_of_frames,
      marked: image.findings.filter((f) => f.frame).map((f) => f.frame.best),
      fetch: window.GalactoFrames.keptFrames(first, {
        kept: renderKept,
        upload: (n) => render(file, n),
        expired: (exc) => exc instanceof ApiError && exc.status === 404
          && exc.detail === "render_expired",
      }),
      draw: (rendered) => {
        if (canvas.isConnected) drawImage(canvas, rendered, image, fileIndex);
      },
      report: (exc, n) => {
        error.hidden = !exc;
        if (exc) {
          error.textContent = `Frame ${n} could not be displayed: ${exc.detail || "client_error"}`
            + ` — ${exc.message}`;
        }
      },
    });
    scroller.remember(first);
    wrap.after(scroller.bar, error);
    return scroller;
  }

  // ---------------------------------------------------------------- one analysis

  let current = null;   // {files, renders: Promise<settled[]>}
  let runId = 0;

  /**
   * Show a detection result; returns the promises of the first frames of the volumes (each
   * resolves once its frame is drawn).
   */
  function showResult(files, renders, result, ms) {
    const rejected = result.rejected || [];
    const rejectedParts = new Set(rejected.map((r) => r.part));
    const accepted = files.map((_, i) => i).filter((i) => !rejectedParts.has(i));
    const images = $("images");
    const rows = [];
    const warnings = rejected.map((r) =>
      `${r.name || files[r.part]?.name || `file ${r.part + 1}`} was not analysed: ${r.detail} — ${r.message}`);
    const mimicRows = [];
    let findingCount = 0;
    let mimicCount = 0;
    let imageCount = 0;
    const fused = [];
    const starts = [];
    const scrollers = new Map();   // image index -> FrameScroller of a volume

    for (const study of result.studies) {
      for (const image of study.images) {
        imageCount += 1;
        const fileIndex = accepted[image.index];
        const file = files[fileIndex];
        const rendered = renders[fileIndex];
        const n = image.findings.length;
        const mimics = image.mimics || [];
        findingCount += n;
        mimicCount += mimics.length;
        const frames = image.number_of_frames;
        const caption = el("figcaption", {},
          el("strong", {}, imageTitle(image)),
          ` · ${file ? file.name : image.source || ""} · ${image.cols}×${image.rows} px`
          + `${frames ? ` × ${frames} frames` : ""} · ${n} finding${n === 1 ? "" : "s"}`,
          mimics.length ? el("span", { class: "mimic-count" },
            ` · ${mimics.length} probable mimic${mimics.length === 1 ? "" : "s"}`) : null);
        const figure = el("figure", { class: "image", "data-image": image.index }, caption);
        images.append(figure);   // in the page before anything is drawn into it
        if (rendered && rendered.status === "fulfilled") {
          const canvas = el("canvas", { "data-image": image.index,
            "aria-label": `${imageTitle(image)} with ${n} marked finding(s)` });
          const wrap = el("div", { class: "canvas-wrap" }, canvas);
          figure.append(wrap);
          if (frames && rendered.value.frames) {
            const scroller = volumeScroller(figure, wrap, canvas, image, fileIndex, file,
              rendered.value);
            scrollers.set(image.index, scroller);
            starts.push(scroller.show(startFrame(image)));
          } else {
            drawImage(canvas, rendered.value, image, fileIndex);
          }
        } else {
          const exc = rendered ? rendered.reason : new Error("not rendered");
          figure.append(el("div", { class: "no-image" }, "The image could not be displayed: ",
            el("code", {}, exc.detail || "client_error"), ` — ${exc.message}`));
        }
        for (const w of image.warnings || []) figure.append(el("div", { class: "image-warning" }, w));

        for (const f of image.findings) {
          const network = typeof f.detector_score === "number"
            && Math.abs(f.detector_score - f.score) >= 0.0005
            ? el("div", { class: "sub", title: "the network's own score, before rescoring" },
              `network ${f.detector_score.toFixed(3)}`) : null;
          const where = f.frame ? el("div", { class: "sub" },
            `frame ${f.frame.best} (detected in ${f.frame.first}–${f.frame.last})`) : null;
          const row = el("tr", { "data-id": f.id, "data-frame": f.frame ? f.frame.best : null,
            class: f.frame ? "goes-to-frame" : null,
            title: f.frame ? "show this finding's best frame" : null },
            el("td", {}, f.id),
            el("td", {}, imageTitle(image), where),
            el("td", { class: "num" }, f.score.toFixed(3), network),
            el("td", { class: "num" }, `${f.size_mm[0].toFixed(1)} × ${f.size_mm[1].toFixed(1)}`),
            el("td", {}, locationText(f)),
            el("td", { class: "evidence" }, f.evidence || "—"));
          if (f.frame) {
            row.addEventListener("click", () => {
              const scroller = scrollers.get(image.index);
              if (scroller) scroller.show(f.frame.best);
            });
          }
          rows.push(row);
        }
        for (const m of mimics) {
          const [x1, y1, x2, y2] = m.box_mm;
          mimicRows.push(el("tr", { class: "mimic", "data-image": image.index,
            "data-label": m.label },
            el("td", {}, imageTitle(image)),
            el("td", {}, m.text),
            el("td", { class: "num" }, m.score.toFixed(3)),
            el("td", { class: "num" }, `${(x2 - x1).toFixed(1)} × ${(y2 - y1).toFixed(1)}`)));
        }
      }
      for (const item of study.fused) fused.push({ item, images: study.images.length });
    }

    const tbody = $("findings").tBodies[0];
    if (rows.length) tbody.replaceChildren(...rows);
    else {
      tbody.replaceChildren(el("tr", { class: "empty" },
        el("td", { colspan: 6 }, "No finding at this operating point.")));
    }

    const mimicBody = $("mimics").tBodies[0];
    if (mimicRows.length) mimicBody.replaceChildren(...mimicRows);
    else {
      mimicBody.replaceChildren(el("tr", { class: "empty" },
        el("td", { colspan: 4 }, modelHasMimicClasses === false
          ? "None: this model has no mimic classes." : "No probable mimic reported.")));
    }

    const fusedList = $("fused");
    if (fused.length) {
      fusedList.replaceChildren(...fused.map(({ item }) => el("li", { "data-ids": item.finding_ids.join(",") },
        el("span", { class: "phrase" }, item.phrase),
        el("span", { class: "meta" }, ` findings ${item.finding_ids.join(" + ")}, score ${item.score.toFixed(2)}`))));
    } else {
      const twoViews = result.studies.some((s) => s.images.length > 1);
      fusedList.replaceChildren(el("li", { class: "empty" }, twoViews
        ? "No finding was matched between the CC and ML/MLO views."
        : "Two-view locations need the CC and ML/MLO views of one breast sent together."));
    }

    $("results").hidden = false;
    showWarnings(warnings);
    const op = result.operating_point;
    const mimicNote = mimicCount
      ? ` and ${mimicCount} probable mimic${mimicCount === 1 ? "" : "s"} (not lesions)` : "";
    setStatus(`${findingCount} finding${findingCount === 1 ? "" : "s"}${mimicNote} on `
      + `${imageCount} image${imageCount === 1 ? "" : "s"} · operating point ${op.name} `
      + `(score ≥ ${op.score_threshold.toFixed(2)}, threshold from ${op.source || "model card"})`
      + ` · ${result.model.name} ${result.model.version} · ${Math.round(ms)} ms`);
    return starts;
  }

  /**
   * Render the files one after the other (settled results, like Promise.allSettled): with the
   * detection running beside them, the page holds at most two requests at a time, within the
   * service's per-client share (GALACTO_MAX_ADMITTED_PER_CLIENT, 2 by default).
   */
  async function renderInTurn(files) {
    const settled = [];
    for (const file of files) {
      try {
        settled.push({ status: "fulfilled", value: await render(file) });
      } catch (reason) {
        settled.push({ status: "rejected", reason });
      }
    }
    return settled;
  }

  async function analyse(files, reuseRenders) {
    const id = ++runId;
    setState("busy");
    clearResults();
    $("file-names").textContent = files.map((f) => f.name).join(", ");
    setStatus(`Analysing ${files.length} file${files.length === 1 ? "" : "s"}…`);
    if (!modelsLoaded) await loadModels();
    const operatingPoint = $("operating-point").value;
    const renders = reuseRenders || renderInTurn(files);
    current = { files, renders };
    let detected;
    try {
      detected = await detect(files, operatingPoint);
    } catch (exc) {
      if (id !== runId) return;
      showError(exc, "Detection failed");
      if (exc.body) showRaw(exc.body);
      setStatus("No result.");
      setState("error");
      return;
    }
    const settled = await renders;
    if (id !== runId) return;   // a newer run started meanwhile
    try {
      const starts = showResult(files, settled, detected.result, detected.ms);
      showRaw(detected.result);
      await Promise.all(starts);   // each volume's first frame drawn
      if (id !== runId) return;
      setState("done");
    } catch (exc) {
      showError(exc, "Displaying the result failed");
      setState("error");
    }
  }

  // ---------------------------------------------------------------- wiring

  function start(fileList) {
    const files = Array.from(fileList || []);
    if (files.length) analyse(files);
  }

  function init() {
    const input = $("file-input");
    input.addEventListener("change", () => {
      start(input.files);
      input.value = "";   // choosing the same file again analyses it again
    });

    const zone = $("drop-zone");
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (e) => {
        e.preventDefault();
        zone.classList.add("dragging");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      zone.addEventListener(type, () => zone.classList.remove("dragging"));
    }
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      start(e.dataTransfer && e.dataTransfer.files);
    });
    // a file dropped beside the zone must not navigate away from the page
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());

    const key = $("api-key");
    key.value = getKey();
    key.addEventListener("change", () => {
      setKey(key.value.trim());
      loadModels();
    });
    $("api-key-clear").addEventListener("click", () => {
      key.value = "";
      setKey("");
      loadModels();
    });

    $("operating-point").addEventListener("change", () => {
      describeOperatingPoint();
      if (current) analyse(current.files, current.renders);
    });

    loadModels();
  }

  init();
})();
