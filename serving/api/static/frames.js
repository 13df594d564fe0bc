// galacto viewer: scrolling through the frames of a tomosynthesis volume.
// Plain JavaScript, no dependencies; viewer.js builds one FrameScroller per volume.
//
// A frame is fetched as a PNG when it is asked for (viewer.js asks the server's copy of the
// volume, GET /v1/render/{id}?frame=N, sending the file to POST /v1/render?frame=N again
// only when the server no longer keeps it), one request at a time: while one is on its way, further moves only
// change the frame wanted, and the latest one is fetched next. The last CACHE_SIZE frames
// fetched are kept. Controls: a slider, the previous / next buttons, the mouse wheel over the
// picture, and the keys ←/↑ (previous), →/↓ (next), Page Up / Page Down (5 frames), Home and
// End, while the figure (or a control in it) has the focus.
//
// For tests: the figure's data-frame is the frame drawn, data-wanted the frame asked for,
// and data-loading is present while a frame is being fetched.
"use strict";

(() => {
  const CACHE_SIZE = 24;
  const PAGE = 5;

  /** A new element with attributes (data-* via "data-...") and children (strings or nodes);
   * viewer.js uses it too. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /**
   * The frame fetcher of a volume whose first render is `first` (its `renderId`: the id of
   * the server's copy, or null): frames come from the server's copy, `kept(renderId, n)`
   * (GET /v1/render/{id}), while it keeps one, so that the file is uploaded once; when a
   * fetch fails with `expired(error)` true (404 render_expired: the server forgot it), the
   * file is sent once again, `upload(n)` (POST /v1/render), whose answer names the new copy
   * the frames after come from. Without an id, every frame is uploaded.
   */
  function keptFrames(first, { kept, upload, expired }) {
    let renderId = first && first.renderId ? first.renderId : null;
    return async (frame) => {
      if (renderId) {
        try {
          return await kept(renderId, frame);
        } catch (exc) {
          if (!expired(exc)) throw exc;
          renderId = null;
        }
      }
      const rendered = await upload(frame);
      renderId = rendered.renderId || null;
      return rendered;
    };
  }

  class FrameScroller {
    /**
     * @param {object} options
     * @param {HTMLElement} options.figure the image's figure (gets the keys and data-*)
     * @param {HTMLElement} options.wrap the element over which the wheel scrolls
     * @param {number} options.count the volume's number of frames
     * @param {number[]} options.marked frames that hold a finding's box (slider ticks)
     * @param {(frame: number) => Promise<object>} options.fetch fetches a rendered frame
     * @param {(rendered: object) => void} options.draw draws a rendered frame
     * @param {(error: Error|null, frame: number) => void} options.report shows (or, with
     *   null, clears) a frame's fetch error
     */
    constructor({ figure, wrap, count, marked, fetch, draw, report }) {
      this.figure = figure;
      this.count = count;
      this.fetchFrame = fetch;
      this.draw = draw;
      this.report = report;
      this.cache = new Map();
      this.wanted = null;
      this.shown = null;
      this.loading = null;
      this.waiters = [];
      const id = `frames-${Math.random().toString(36).slice(2)}`;
      this.slider = el("input", { type: "range", class: "frame-slider", min: 1, max: count,
        step: 1, value: 1, list: `${id}-marks`, "aria-label": "frame" });
      this.label = el("span", { class: "frame-label", "aria-live": "polite" });
      const ticks = el("datalist", { id: `${id}-marks` },
        [...new Set(marked)].sort((a, b) => a - b).map((n) => el("option", { value: n })));
      const prev = el("button", { type: "button", class: "frame-prev", title: "previous frame" },
        "‹");
      const next = el("button", { type: "button", class: "frame-next", title: "next frame" },
        "›");
      this.bar = el("div", { class: "frame-bar" }, prev, this.slider, next, this.label, ticks);
      prev.addEventListener("click", () => this.step(-1));
      next.addEventListener("click", () => this.step(1));
      this.slider.addEventListener("input", () => this.show(Number(this.slider.value)));
      wrap.addEventListener("wheel", (e) => {
        if (!e.deltaY) return;
        e.preventDefault();
        this.step(e.deltaY > 0 ? 1 : -1);
      }, { passive: false });
      figure.tabIndex = 0;
      figure.addEventListener("keydown", (e) => this.key(e));
    }

    /** The frame ``n`` clamped to 1..count. */
    clamp(n) {
      return Math.min(Math.max(Math.round(n), 1), this.count);
    }

    step(delta) {
      return this.show((this.wanted ?? this.shown ?? 1) + delta);
    }

    key(e) {
      if (e.target === this.slider && e.key.startsWith("Arrow")) return;  // the slider's own
      const moves = { ArrowLeft: -1, ArrowUp: -1, ArrowRight: 1, ArrowDown: 1,
        PageUp: -PAGE, PageDown: PAGE };
      if (e.key in moves) this.step(moves[e.key]);
      else if (e.key === "Home") this.show(1);
      else if (e.key === "End") this.show(this.count);
      else return;
      e.preventDefault();
    }

    /** Seed the cache with a frame already fetched (the first render). */
    remember(rendered) {
      if (rendered && rendered.frame) this.keep(rendered.frame, rendered);
    }

    keep(frame, rendered) {
      this.cache.delete(frame);
      this.cache.set(frame, rendered);
      while (this.cache.size > CACHE_SIZE) this.cache.delete(this.cache.keys().next().value);
    }

    updateLabel() {
      const n = this.wanted ?? this.shown;
      this.slider.value = String(n);
      const pending = this.wanted !== null && this.wanted !== this.shown ? " (loading…)" : "";
      this.label.textContent = `frame ${n} / ${this.count}${pending}`;
      this.figure.dataset.wanted = String(n);
      if (this.loading !== null) this.figure.dataset.loading = String(this.loading);
      else delete this.figure.dataset.loading;
    }

    /** Ask for frame ``n``; resolves once the frame wanted last is drawn (or failed). */
    show(n) {
      this.wanted = this.clamp(n);
      const done = new Promise((resolve) => this.waiters.push(resolve));
      this.updateLabel();
      this.pump();
      return done;
    }

    paint(frame, rendered) {
      this.draw(rendered);
      this.shown = frame;
      this.figure.dataset.frame = String(frame);
    }

    settle() {
      const waiters = this.waiters;
      this.waiters = [];
      for (const resolve of waiters) resolve(this.shown);
    }

    /** Draw the wanted frame from the cache, else fetch it (one request at a time). */
    async pump() {
      if (this.loading !== null) return;
      while (this.wanted !== null && this.wanted !== this.shown) {
        const frame = this.wanted;
        const cached = this.cache.get(frame);
        if (cached) {
          this.paint(frame, cached);
          continue;
        }
        this.loading = frame;
        this.updateLabel();
        try {
          const rendered = await this.fetchFrame(frame);
          this.keep(frame, rendered);
          this.report(null, frame);
          if (this.wanted === frame) this.paint(frame, rendered);
        } catch (exc) {
          this.report(exc, frame);
          if (this.wanted === frame) this.wanted = this.shown;  // stay on the frame shown
        } finally {
          this.loading = null;
        }
      }
      this.updateLabel();
      this.settle();
    }
  }

  window.GalactoFrames = { FrameScroller, el, keptFrames };
})();
