// vae-service web page: plain JavaScript, no build step, no dependencies.
//
// It calls only the service's public JSON API (GET /models, /models/{name}/versions/{v},
// .../report; POST .../reconstruct, /anomaly-score, /sample, /encode, /decode), with an API key
// from sessionStorage when the service wants one. Image work happens here, in the browser: a
// drawing or an upload is scaled to the model's image_shape, greyscaled (or kept RGB for
// three-channel models) and mapped to the model's value_range, all read from the metadata, so
// any image model works, not only the 8x8 digits.

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = 'vae-service.api-key';
// Below this share of full brightness a pixel counts as background when finding the ink.
const INK_LEVEL = 0.1;
// Margin around the ink when "fit" is on, as a share of the frame: training digits (scikit-learn's,
// MNIST's) fill most of theirs, so a drawing is centred and scaled the same way.
const FIT_MARGIN = 0.06;
const TABULAR_CHUNK = 256; // rows per request: far below VAE_MAX_BATCH_SIZE's default
const MAX_SHOWN_ROWS = 500;
// The monitoring panel asks again this often while it is shown (the server computes a report
// at most once a VAE_MONITOR_REPORT_INTERVAL_S, 1 s by default, whoever asks).
const MONITOR_REFRESH_MS = 5000;
const SVG = 'http://www.w3.org/2000/svg';

// ------------------------------------------------------------------ small helpers

function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') element.className = value;
    else if (key === 'text') element.textContent = value;
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

function fmt(x, digits = 4) {
  if (typeof x !== 'number') return String(x);
  if (!Number.isFinite(x)) return String(x);
  const size = Math.abs(x);
  if (size !== 0 && (size < 1e-3 || size >= 1e5)) return x.toExponential(digits - 1);
  return String(Number(x.toPrecision(digits)));
}

// replaceChildren, skipping the null a conditional part leaves (which it would show as "null").
function fill(element, ...children) {
  element.replaceChildren(
    ...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false),
  );
}

const percent = (p) => `${(100 * p).toFixed(1)}%`;
const clamp01 = (t) => (t < 0 ? 0 : t > 1 ? 1 : t);
const randomSeed = () => Math.floor(Math.random() * 2147483647);

// Runs `task` once at a time; calls made meanwhile fold into one more run afterwards, so a
// slider dragged quickly costs a request per answer, not per pixel of movement.
function coalesced(task) {
  let running = false;
  let again = false;
  return async function run() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        await task();
      } while (again);
    } finally {
      running = false;
    }
  };
}

// ------------------------------------------------------------------ API client

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function apiKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || '';
  } catch {
    return ''; // storage disabled: the page still works without keys
  }
}

// Paths are relative (no leading "/"): they resolve against the page, so the page works behind a
// proxy that serves the service under a prefix.
async function request(path, body) {
  const headers = { accept: 'application/json' };
  const key = apiKey();
  if (key) headers.authorization = `Bearer ${key}`;
  const init = { headers };
  if (body !== undefined) {
    init.method = 'POST';
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, 'network', `the service did not answer (${error.message})`);
  }
  if (!response.ok) {
    let code = 'http_error';
    let message = `${response.status} ${response.statusText}`;
    try {
      const error = (await response.json()).error;
      if (error && error.message) ({ code, message } = error);
    } catch {
      // not our JSON error body (a proxy's page, say): the status line says enough
    }
    throw new ApiError(response.status, code, message);
  }
  return response;
}

const getJson = async (path) => (await request(path)).json();
const postJson = async (path, body) => (await request(path, body)).json();

function modelPath(suffix) {
  const { name, version } = state;
  return `models/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}/${suffix}`;
}

// ------------------------------------------------------------------ messages

function say(text) {
  $('status').textContent = text;
}

function clearAlert() {
  $('alert').hidden = true;
  $('alert').textContent = '';
}

function fail(error) {
  const alert = $('alert');
  let text = error instanceof Error ? error.message : String(error);
  if (error instanceof ApiError && error.status === 401) {
    text = 'This service needs an API key: enter it under "API key" above.';
    openKeyBox();
  } else if (error instanceof ApiError && error.status === 403) {
    text = 'The API key was refused: check it under "API key" above.';
    openKeyBox();
  }
  alert.textContent = text;
  alert.hidden = false;
  say('');
}

function openKeyBox() {
  $('key-box').open = true;
  $('api-key').focus();
}

// ------------------------------------------------------------------ state

const state = {
  models: [],
  defaultModel: null,
  name: null,
  version: null,
  meta: null,
  epoch: 0, // bumped on every model change; answers for an older model are dropped
  image: null, // {C, H, W, D} for image models
  range: null, // {low: [], high: [], assumed: bool}
  variational: false,
  source: 'pad', // what the input comes from: 'pad' (drawing) or 'upload'
  upload: null, // canvas holding the uploaded image at (up to 1024 px) natural size
  padHasInk: false,
  snapshots: { a: null, b: null },
  tab: 'score',
  rendered: { samples: -1, walk: -1, card: -1 }, // the epoch each tab was last drawn for
  blobUrls: [],
  monitorTimer: null,
};

const low = (i) => state.range.low[state.range.low.length === 1 ? 0 : i];
const high = (i) => state.range.high[state.range.high.length === 1 ? 0 : i];
const toUnit = (value, i) => clamp01((value - low(i)) / (high(i) - low(i) || 1));
const fromUnit = (t, i) => low(i) + t * (high(i) - low(i));

// ------------------------------------------------------------------ images: values <-> pixels

function paintValues(canvas, values, heat = false) {
  const { C, H, W } = state.image;
  canvas.width = W;
  canvas.height = H;
  const context = canvas.getContext('2d');
  const picture = context.createImageData(W, H);
  const plane = H * W;
  for (let p = 0; p < plane; p += 1) {
    let r;
    let g;
    let b;
    if (heat) {
      // |difference| as a share of the value range: black, through red, to yellow
      const t = values[p];
      r = 255 * Math.min(1, 2 * t);
      g = 255 * Math.max(0, 2 * t - 1);
      b = 40 * (1 - t);
    } else if (C >= 3) {
      r = 255 * toUnit(values[p], p);
      g = 255 * toUnit(values[plane + p], plane + p);
      b = 255 * toUnit(values[2 * plane + p], 2 * plane + p);
    } else {
      r = g = b = 255 * toUnit(values[p], p);
    }
    picture.data.set([r, g, b, 255], 4 * p);
  }
  context.putImageData(picture, 0, 0);
}

// |input - reconstruction| per pixel (largest over channels), as a share of the value range.
function differences(x, y) {
  const { C, H, W } = state.image;
  const plane = H * W;
  const out = new Float32Array(plane);
  for (let c = 0; c < C; c += 1) {
    for (let p = 0; p < plane; p += 1) {
      const i = c * plane + p;
      out[p] = Math.max(out[p], Math.abs(toUnit(x[i], i) - toUnit(y[i], i)));
    }
  }
  return out;
}

// A canvas -> brightness planes in [0, 1] (1 for greyscale models, 3 for RGB) and the ink map.
// Transparent pixels take the background's colour, whichever `invert` says that is.
function readPixels(canvas, invert) {
  const { width, height } = canvas;
  const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
  const rgb = state.image.C >= 3;
  const planes = rgb
    ? [0, 1, 2].map(() => new Float32Array(width * height))
    : [new Float32Array(width * height)];
  const ink = new Float32Array(width * height);
  const background = invert ? 1 : 0;
  for (let p = 0; p < width * height; p += 1) {
    const alpha = data[4 * p + 3] / 255;
    const channel = (k) => {
      const value = alpha * (data[4 * p + k] / 255) + (1 - alpha) * background;
      return invert ? 1 - value : value;
    };
    const [r, g, b] = [channel(0), channel(1), channel(2)];
    // ITU-R BT.601 luma, the usual greyscale weighting
    const grey = 0.299 * r + 0.587 * g + 0.114 * b;
    ink[p] = grey;
    if (rgb) {
      planes[0][p] = r;
      planes[1][p] = g;
      planes[2][p] = b;
    } else {
      planes[0][p] = grey;
    }
  }
  return { width, height, planes, ink };
}

// The region of the source that becomes the model's frame: the whole picture (letterboxed to
// the model's aspect ratio), or with `fit` a box around the ink plus a margin.
function frameBox(pixels, fit) {
  const { width, height, ink } = pixels;
  const aspect = state.image.W / state.image.H;
  let [x0, y0, x1, y1] = [0, 0, width, height];
  let margin = 0;
  if (fit) {
    let [left, top, right, bottom] = [width, height, -1, -1];
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        if (ink[y * width + x] > INK_LEVEL) {
          left = Math.min(left, x);
          right = Math.max(right, x);
          top = Math.min(top, y);
          bottom = Math.max(bottom, y);
        }
      }
    }
    if (right >= 0) {
      [x0, y0, x1, y1] = [left, top, right + 1, bottom + 1];
      margin = FIT_MARGIN;
    }
  }
  const boxHeight = Math.max(y1 - y0, (x1 - x0) / aspect) / (1 - 2 * margin);
  const boxWidth = boxHeight * aspect;
  return {
    x: (x0 + x1) / 2 - boxWidth / 2,
    y: (y0 + y1) / 2 - boxHeight / 2,
    width: boxWidth,
    height: boxHeight,
  };
}

// Box-filter resampling: each model pixel is the mean of the source pixels whose centres lie
// in its cell (outside the picture counts as background); a cell holding no centre (an
// upscale) takes the nearest pixel. An image that is an exact multiple of the model's size
// comes back exactly, which a canvas's own smoothing would not give.
function resample(plane, width, height, box, W, H) {
  const out = new Float32Array(W * H);
  const cellWidth = box.width / W;
  const cellHeight = box.height / H;
  for (let ty = 0; ty < H; ty += 1) {
    const y0 = box.y + ty * cellHeight;
    const iy0 = Math.ceil(y0 - 0.5);
    const iy1 = Math.ceil(y0 + cellHeight - 0.5);
    for (let tx = 0; tx < W; tx += 1) {
      const x0 = box.x + tx * cellWidth;
      const ix0 = Math.ceil(x0 - 0.5);
      const ix1 = Math.ceil(x0 + cellWidth - 0.5);
      const count = (ix1 - ix0) * (iy1 - iy0);
      let value = 0;
      if (count <= 0) {
        const px = Math.floor(x0 + cellWidth / 2);
        const py = Math.floor(y0 + cellHeight / 2);
        if (px >= 0 && py >= 0 && px < width && py < height) value = plane[py * width + px];
      } else {
        let sum = 0;
        for (let y = Math.max(iy0, 0); y < Math.min(iy1, height); y += 1) {
          for (let x = Math.max(ix0, 0); x < Math.min(ix1, width); x += 1)
            sum += plane[y * width + x];
        }
        value = sum / count;
      }
      out[ty * W + tx] = value;
    }
  }
  return out;
}

// The current drawing or upload as model inputs (user units, flat C*H*W), or null when empty.
function currentInput() {
  const { C, H, W } = state.image;
  const source = state.source === 'upload' && state.upload ? state.upload : $('pad');
  if (source === $('pad') && !state.padHasInk) return null;
  const pixels = readPixels(source, $('invert').checked);
  if (!pixels.ink.some((v) => v > INK_LEVEL)) return null;
  const box = frameBox(pixels, $('fit-ink').checked);
  const planes = pixels.planes.map((p) => resample(p, pixels.width, pixels.height, box, W, H));
  const values = new Array(C * H * W);
  for (let c = 0; c < C; c += 1) {
    const plane = planes[Math.min(c, planes.length - 1)];
    for (let p = 0; p < H * W; p += 1) values[c * H * W + p] = fromUnit(plane[p], c * H * W + p);
  }
  return values;
}

// ------------------------------------------------------------------ the drawing pad

function padColours() {
  const invert = $('invert').checked;
  return { background: invert ? '#ffffff' : '#000000', ink: invert ? '#000000' : '#ffffff' };
}

function resetPad() {
  const pad = $('pad');
  const { H, W } = state.image;
  // A whole multiple of the model's size, so a picture painted from model values reads back
  // exactly (see resample).
  pad.width = W * Math.ceil(280 / W);
  pad.height = H * Math.ceil(280 / H);
  pad.style.aspectRatio = `${W} / ${H}`;
  const context = pad.getContext('2d');
  context.fillStyle = padColours().background;
  context.fillRect(0, 0, pad.width, pad.height);
  state.padHasInk = false;
  state.source = 'pad';
  state.upload = null;
}

function strokeWidth() {
  const pad = $('pad');
  const side = Math.min(pad.width, pad.height);
  // About two model pixels once the ink is scaled to the frame (the training digits' own stroke
  // width), within bounds that keep a big model's strokes drawable and a tiny one's readable.
  const width = (2 * side) / Math.max(state.image.W, state.image.H);
  return Math.min(Math.max(width, side / 16), side / 6);
}

function setUpPad() {
  const pad = $('pad');
  let last = null;
  const point = (event) => {
    const rect = pad.getBoundingClientRect();
    return [
      ((event.clientX - rect.left) / rect.width) * pad.width,
      ((event.clientY - rect.top) / rect.height) * pad.height,
    ];
  };
  const draw = (from, to) => {
    const context = pad.getContext('2d');
    context.strokeStyle = context.fillStyle = padColours().ink;
    context.lineWidth = strokeWidth();
    context.lineCap = context.lineJoin = 'round';
    context.beginPath();
    context.moveTo(...from);
    context.lineTo(...to);
    context.stroke();
  };
  pad.addEventListener('pointerdown', (event) => {
    if (!state.image) return;
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    last = point(event);
    state.source = 'pad'; // drawing over an upload draws on what the pad shows
    state.padHasInk = true;
    draw(last, last);
  });
  pad.addEventListener('pointermove', (event) => {
    if (last === null) return;
    const next = point(event);
    draw(last, next);
    last = next;
    analyseSoon();
  });
  const end = () => {
    if (last === null) return;
    last = null;
    analyseSoon();
  };
  pad.addEventListener('pointerup', end);
  pad.addEventListener('pointercancel', end);
}

// Show model values on the pad (a sample picked as input), so one can draw on from there.
function paintPad(values) {
  const small = document.createElement('canvas');
  paintValues(small, values);
  $('invert').checked = false;
  resetPad();
  const pad = $('pad');
  const context = pad.getContext('2d');
  context.imageSmoothingEnabled = false;
  context.drawImage(small, 0, 0, pad.width, pad.height);
  state.padHasInk = true;
  $('fit-ink').checked = false; // already framed as the model frames its data
}

async function loadUpload(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new Error(`${file.name}: not an image this browser can read`);
  }
  // Big photos are shrunk first: a few hundred pixels a side is plenty for any model here.
  const shrink = Math.min(1, 1024 / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement('canvas');
  canvas.width = Math.max(1, Math.round(bitmap.width * shrink));
  canvas.height = Math.max(1, Math.round(bitmap.height * shrink));
  const context = canvas.getContext('2d');
  context.imageSmoothingEnabled = shrink < 1;
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  $('invert').checked = looksInverted(canvas);
  $('fit-ink').checked = false; // an upload is taken as framed; tick "fit" to crop to the ink
  resetPad();
  state.source = 'upload';
  state.upload = canvas;
  // Show it on the pad, letterboxed, so one can draw over it.
  const pad = $('pad');
  const scale = Math.min(pad.width / canvas.width, pad.height / canvas.height);
  const [w, h] = [canvas.width * scale, canvas.height * scale];
  pad.getContext('2d').drawImage(canvas, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  state.padHasInk = true;
}

// Dark ink on light paper (a scan, a photo) rather than light on dark (how digits datasets
// store them)? Judged from the border, where the background is; a transparent border: from the
// visible pixels, which are then the ink.
function looksInverted(canvas) {
  const { width, height } = canvas;
  const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
  const grey = (p) =>
    (0.299 * data[4 * p] + 0.587 * data[4 * p + 1] + 0.114 * data[4 * p + 2]) / 255;
  let sum = 0;
  let count = 0;
  let border = 0;
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      if (y > 0 && y < height - 1 && x > 0 && x < width - 1) continue;
      border += 1;
      const p = y * width + x;
      if (data[4 * p + 3] >= 128) {
        sum += grey(p);
        count += 1;
      }
    }
  }
  if (count >= border / 2) return sum / count > 0.5;
  let inkSum = 0;
  let inkCount = 0;
  for (let p = 0; p < width * height; p += 1) {
    if (data[4 * p + 3] >= 128) {
      inkSum += grey(p);
      inkCount += 1;
    }
  }
  return inkCount > 0 && inkSum / inkCount < 0.5;
}

function addNoise() {
  const pad = $('pad');
  const { H, W } = state.image;
  const context = pad.getContext('2d');
  const [cellWidth, cellHeight] = [pad.width / W, pad.height / H];
  for (let y = 0; y < H; y += 1) {
    for (let x = 0; x < W; x += 1) {
      if (Math.random() < 0.25) {
        const level = Math.round(255 * Math.random());
        context.fillStyle = `rgb(${level}, ${level}, ${level})`;
        context.fillRect(x * cellWidth, y * cellHeight, cellWidth, cellHeight);
      }
    }
  }
  state.source = 'pad';
  state.padHasInk = true;
}

// ------------------------------------------------------------------ scoring an image

const SCORE_MEANING = {
  recon_mse: 'mean squared reconstruction error (model units)',
  neg_elbo: '-ELBO in nats (lower bound on -log p(x))',
  recon_complexity:
    'log reconstruction error minus what normal images with as many edges get (0: as expected)',
};

function scoreExplanation(scoreType) {
  const calibration = state.meta.anomaly.scores[scoreType];
  const meaning = SCORE_MEANING[scoreType] || 'see the model card';
  if (!calibration) return `${scoreType}: ${meaning}.`;
  return (
    `${scoreType}: ${meaning}. The threshold is the ${fmt(calibration.percentile)}th percentile ` +
    `of ${calibration.n_samples} normal validation items' scores.`
  );
}

function scoreBar(score, threshold, anomalous, extraClass = '') {
  const top = Math.max(2 * threshold, 1.15 * score) || 1;
  const fill = h('div', { class: 'fill' });
  fill.style.width = `${(100 * Math.min(score, top)) / top}%`;
  const mark = h('div', { class: 'threshold' }, h('span', { text: `threshold ${fmt(threshold)}` }));
  mark.style.left = `${(100 * threshold) / top}%`;
  return h(
    'div',
    { class: `bar ${anomalous ? 'bad' : 'ok'} ${extraClass}`, 'aria-hidden': 'true' },
    fill,
    mark,
  );
}

function renderScore(answer) {
  const score = answer.scores[0];
  const anomalous = answer.is_anomaly[0];
  const tail = answer.tail_probability ? answer.tail_probability[0] : null;
  const result = $('score-result');
  result.dataset.score = String(score);
  result.dataset.threshold = String(answer.threshold);
  result.dataset.anomaly = String(anomalous);
  const facts = [
    ['Score', h('span', { id: 'score-value', text: fmt(score) })],
    ['Threshold', fmt(answer.threshold)],
  ];
  if (tail !== null) facts.push(['Normal items scoring as high', percent(tail)]);
  result.replaceChildren(
    h(
      'p',
      { class: `verdict ${anomalous ? 'bad' : 'ok'}`, id: 'verdict' },
      anomalous ? 'Anomalous: above the threshold' : 'Looks normal: below the threshold',
    ),
    scoreBar(score, answer.threshold, anomalous),
    h(
      'dl',
      { class: 'numbers' },
      facts.map(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)]),
    ),
    h('p', { class: 'hint', text: scoreExplanation(answer.score_type) }),
  );
}

function clearResults() {
  for (const id of ['model-input', 'reconstruction', 'difference']) {
    // Resizing clears a canvas; the model's size keeps the empty frames' shape right.
    $(id).width = state.image.W;
    $(id).height = state.image.H;
  }
  const result = $('score-result');
  delete result.dataset.score;
  result.replaceChildren(h('p', { class: 'hint', text: 'Draw or upload something to score it.' }));
}

const analyse = coalesced(async () => {
  if (!state.image) return;
  const epoch = state.epoch;
  const values = currentInput();
  if (values === null) {
    clearResults();
    return;
  }
  paintValues($('model-input'), values);
  try {
    const [reconstruction, score] = await Promise.all([
      postJson(modelPath('reconstruct'), { inputs: [values] }),
      postJson(modelPath('anomaly-score'), { inputs: [values], score_type: $('score-type').value }),
    ]);
    if (epoch !== state.epoch) return;
    const output = reconstruction.outputs[0].flat(Infinity);
    paintValues($('reconstruction'), output);
    paintValues($('difference'), differences(values, output), true);
    renderScore(score);
    clearAlert();
    say(`Scored with ${state.name} version ${state.version}.`);
  } catch (error) {
    fail(error);
  }
});

let analyseTimer = null;
function analyseSoon() {
  // While drawing, a few answers a second keep up with the pen without flooding the service.
  if (analyseTimer === null) {
    analyseTimer = setTimeout(() => {
      analyseTimer = null;
      analyse();
    }, 120);
  }
}

// ------------------------------------------------------------------ scoring rows

function parseRows(text) {
  const rows = [];
  const D = state.meta.input.feature_count;
  const lines = text.split(/\r?\n/);
  let headerSeen = false;
  for (let index = 0; index < lines.length; index += 1) {
    const line = lines[index].trim();
    if (!line || line.startsWith('#')) continue;
    const cells = line.split(/[,;\t ]+/).filter((c) => c !== '');
    const numbers = cells.map(Number);
    if (numbers.some((n) => !Number.isFinite(n))) {
      if (rows.length === 0 && !headerSeen) {
        headerSeen = true; // a header line: column names, not data
        continue;
      }
      throw new Error(
        `line ${index + 1}: "${cells.find((c) => !Number.isFinite(Number(c)))}" is not a number`,
      );
    }
    if (numbers.length !== D) {
      throw new Error(
        `line ${index + 1}: ${numbers.length} numbers; model ${state.name} takes ${D} per row`,
      );
    }
    rows.push(numbers);
  }
  if (rows.length === 0) throw new Error('no rows to score: paste or upload some first');
  return rows;
}

async function scoreRows() {
  const epoch = state.epoch;
  let rows;
  try {
    rows = parseRows($('rows').value);
  } catch (error) {
    fail(error);
    return;
  }
  const button = $('score-rows');
  button.disabled = true;
  say(`Scoring ${rows.length} row${rows.length === 1 ? '' : 's'}…`);
  try {
    const scoreType = $('row-score-type').value;
    const answers = [];
    for (let start = 0; start < rows.length; start += TABULAR_CHUNK) {
      answers.push(
        await postJson(modelPath('anomaly-score'), {
          inputs: rows.slice(start, start + TABULAR_CHUNK),
          score_type: scoreType,
        }),
      );
    }
    if (epoch !== state.epoch) return;
    const scores = answers.flatMap((a) => a.scores);
    const flags = answers.flatMap((a) => a.is_anomaly);
    const tails = answers.flatMap((a) => a.tail_probability || a.scores.map(() => null));
    renderRowScores(scores, flags, tails, answers[0].threshold, answers[0].score_type);
    clearAlert();
    say(
      `Scored ${rows.length} row${rows.length === 1 ? '' : 's'} with ${state.name} version ${state.version}.`,
    );
  } catch (error) {
    fail(error);
  } finally {
    button.disabled = false;
  }
}

function renderRowScores(scores, flags, tails, threshold, scoreType) {
  const flagged = flags.filter(Boolean).length;
  const shown = Math.min(scores.length, MAX_SHOWN_ROWS);
  const body = [];
  for (let i = 0; i < shown; i += 1) {
    body.push(
      h(
        'tr',
        { class: flags[i] ? 'anomalous' : '' },
        h('td', { text: String(i + 1) }),
        h('td', { class: 'row-score', text: fmt(scores[i]) }),
        h('td', {}, scoreBar(scores[i], threshold, flags[i], 'mini-bar')),
        h('td', { class: 'row-verdict', text: flags[i] ? 'anomalous' : 'normal' }),
        h('td', { text: tails[i] === null ? '' : percent(tails[i]) }),
      ),
    );
  }
  const csv = ['row,score,threshold,is_anomaly,tail_probability']
    .concat(scores.map((s, i) => `${i + 1},${s},${threshold},${flags[i]},${tails[i] ?? ''}`))
    .join('\n');
  const link = h('a', {
    href: URL.createObjectURL(new Blob([csv], { type: 'text/csv' })),
    download: 'scores.csv',
    text: 'Download all scores (CSV)',
  });
  state.blobUrls.push(link.href);
  fill(
    $('row-results'),
    h('h2', { text: 'Scores' }),
    h(
      'p',
      {
        class: 'summary-line',
        id: 'row-summary',
        dataset: { rows: String(scores.length), anomalous: String(flagged) },
      },
      `${scores.length} row${scores.length === 1 ? '' : 's'}: ${flagged} anomalous (threshold ${fmt(threshold)}, ${scoreType})`,
    ),
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { id: 'row-table' },
        h('caption', { class: 'visually-hidden', text: 'anomaly score of each row' }),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            ['Row', 'Score', 'vs threshold', 'Verdict', 'Normal items scoring as high'].map((t) =>
              h('th', { scope: 'col', text: t }),
            ),
          ),
        ),
        h('tbody', {}, body),
      ),
    ),
    shown < scores.length
      ? h('p', { class: 'hint', text: `Showing the first ${shown} of ${scores.length} rows.` })
      : null,
    h('p', {}, link),
  );
}

async function addGeneratedRow() {
  try {
    const answer = await postJson(modelPath('sample'), {
      n: 1,
      seed: randomSeed(),
      temperature: 1,
    });
    const row = answer.outputs[0]
      .flat(Infinity)
      .map((v) => fmt(v, 6))
      .join(', ');
    const rows = $('rows');
    rows.value = `${rows.value.trimEnd()}${rows.value.trim() ? '\n' : ''}${row}\n`;
    clearAlert();
  } catch (error) {
    fail(error);
  }
}

// ------------------------------------------------------------------ samples

const refreshSamples = coalesced(async () => {
  if (!state.variational) return;
  const epoch = state.epoch;
  const seedInput = $('seed');
  const seed = Math.max(0, Math.floor(Number(seedInput.value) || 0));
  const temperature = Number($('temperature').value);
  const n = Number($('sample-count').value);
  const grid = $('samples');
  grid.setAttribute('aria-busy', 'true');
  try {
    const answer = await postJson(modelPath('sample'), { n, seed, temperature });
    if (epoch !== state.epoch) return;
    const items = answer.outputs.map((item) => item.flat(Infinity));
    if (state.image) {
      grid.replaceChildren(
        ...items.map((values, k) => {
          const canvas = h('canvas', { class: 'pixels' });
          paintValues(canvas, values);
          return h(
            'button',
            {
              type: 'button',
              title: `Score sample ${k + 1}`,
              'aria-label': `sample ${k + 1} of ${items.length}: score it`,
              onclick: () => useAsInput(values),
            },
            canvas,
          );
        }),
      );
      grid.className = 'sample-grid';
      // A square grid (4x4, 6x6, 8x8) reads as one picture rather than a ragged list.
      grid.style.gridTemplateColumns = `repeat(${Math.ceil(Math.sqrt(items.length))}, minmax(0, 5.5rem))`;
    } else {
      grid.className = 'table-wrap';
      grid.replaceChildren(rowTable(items, 'generated rows'));
    }
    grid.dataset.seed = String(answer.seed);
    grid.dataset.temperature = String(answer.temperature);
    grid.dataset.renders = String(Number(grid.dataset.renders || 0) + 1);
    state.rendered.samples = epoch;
    clearAlert();
    say(`${items.length} samples, seed ${answer.seed}, temperature ${fmt(answer.temperature, 3)}.`);
  } catch (error) {
    fail(error);
  } finally {
    grid.removeAttribute('aria-busy');
  }
});

function rowTable(rows, caption) {
  const D = rows[0].length;
  return h(
    'table',
    {},
    h('caption', { class: 'visually-hidden', text: caption }),
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', { scope: 'col', text: '#' }),
        Array.from({ length: D }, (_, j) => h('th', { scope: 'col', text: `x${j + 1}` })),
      ),
    ),
    h(
      'tbody',
      {},
      rows.map((row, i) =>
        h(
          'tr',
          {},
          h('td', { text: String(i + 1) }),
          row.map((v) => h('td', { text: fmt(v) })),
        ),
      ),
    ),
  );
}

function useAsInput(values) {
  paintPad(values);
  showTab('score', true);
  analyse();
}

async function useGeneratedSample() {
  try {
    const answer = await postJson(modelPath('sample'), {
      n: 1,
      seed: randomSeed(),
      temperature: 1,
    });
    paintPad(answer.outputs[0].flat(Infinity));
    analyse();
  } catch (error) {
    fail(error);
  }
}

// ------------------------------------------------------------------ latent walk

function endpointKind(end) {
  const checked = document.querySelector(`input[name="end-${end}-kind"]:checked`);
  return checked ? checked.value : 'seed';
}

function takeSnapshot(end) {
  const values = currentInput();
  if (values === null) {
    fail(new Error('Draw or upload something on the Score tab first.'));
    return;
  }
  state.snapshots[end] = values;
  const fieldset = $(`end-${end}`);
  const thumb = fieldset.querySelector('canvas');
  paintValues(thumb, values);
  thumb.hidden = false;
  const radio = fieldset.querySelector('input[value="input"]');
  radio.disabled = false;
  radio.checked = true;
  clearAlert();
}

async function endpointLatent(end) {
  if (endpointKind(end) === 'input') {
    const answer = await postJson(modelPath('encode'), { inputs: [state.snapshots[end]] });
    return answer.mu[0]; // the posterior mean: where the model puts this input
  }
  const seed = Math.max(
    0,
    Math.floor(Number($(`end-${end}`).querySelector('.end-seed').value) || 0),
  );
  const answer = await postJson(modelPath('sample'), { n: 1, seed, temperature: 1 });
  return answer.latents[0];
}

const walk = coalesced(async () => {
  const epoch = state.epoch;
  const strip = $('walk-strip');
  for (const end of ['a', 'b']) {
    if (endpointKind(end) === 'seed' && !state.variational) {
      fail(
        new Error(
          `A ${state.meta.kind} has no prior to draw from: take two snapshots of your input instead.`,
        ),
      );
      return;
    }
  }
  strip.setAttribute('aria-busy', 'true');
  try {
    const [za, zb] = await Promise.all([endpointLatent('a'), endpointLatent('b')]);
    const steps = Number($('walk-steps').value);
    const ts = Array.from({ length: steps }, (_, i) => i / (steps - 1));
    const latents = ts.map((t) => za.map((a, j) => (1 - t) * a + t * zb[j]));
    const answer = await postJson(modelPath('decode'), { latents });
    if (epoch !== state.epoch) return;
    strip.replaceChildren(
      ...answer.outputs.map((item, i) => {
        const canvas = h('canvas', {
          class: 'pixels',
          role: 'img',
          'aria-label': `decoded point t = ${ts[i].toFixed(2)}`,
        });
        paintValues(canvas, item.flat(Infinity));
        return h('figure', {}, canvas, h('figcaption', { text: `t = ${ts[i].toFixed(2)}` }));
      }),
    );
    strip.dataset.steps = String(steps);
    strip.dataset.renders = String(Number(strip.dataset.renders || 0) + 1);
    state.rendered.walk = epoch;
    clearAlert();
    say(`Decoded ${steps} points on the line from A to B.`);
  } catch (error) {
    fail(error);
  } finally {
    strip.removeAttribute('aria-busy');
  }
});

function resetWalk() {
  state.snapshots = { a: null, b: null };
  for (const end of ['a', 'b']) {
    const fieldset = $(`end-${end}`);
    fieldset.querySelector('canvas').hidden = true; // until a snapshot is taken
    const seedRadio = fieldset.querySelector('input[value="seed"]');
    const inputRadio = fieldset.querySelector('input[value="input"]');
    seedRadio.disabled = !state.variational;
    fieldset.querySelector('.end-seed').disabled = !state.variational;
    inputRadio.disabled = true;
    seedRadio.checked = state.variational;
    inputRadio.checked = !state.variational;
  }
  $('walk-strip').replaceChildren(
    state.variational
      ? ''
      : h('p', {
          class: 'hint',
          text: 'Take a snapshot of two different inputs, then walk between them.',
        }),
  );
}

// ------------------------------------------------------------------ model card

function factRows(meta) {
  const input = meta.input || {};
  const range = meta.value_range;
  const rangeText = !range
    ? 'unbounded (standardised)'
    : range.low.length === 1
      ? `${fmt(range.low[0])} to ${fmt(range.high[0])}`
      : `per feature, e.g. ${fmt(range.low[0])} to ${fmt(range.high[0])}`;
  return [
    ['Name', meta.name],
    ['Version', `${meta.version} (of ${(meta.versions || [meta.version]).join(', ')})`],
    ['Kind', meta.kind],
    ['Created', meta.created_at || 'unknown'],
    ['Input shape', JSON.stringify(input.shape)],
    ['Image shape', input.image_shape ? input.image_shape.join(' × ') : 'not an image model'],
    ['Features', String(input.feature_count)],
    ['Latent dimensions', String(meta.latent_dim)],
    [
      'Likelihood',
      meta.likelihood
        ? `${meta.likelihood.kind}${meta.likelihood.sigma ? `, σ = ${fmt(meta.likelihood.sigma)}` : ''}`
        : '',
    ],
    ['Preprocessing', String(meta.preprocessing)],
    ['Value range', rangeText],
    ['Operations', (meta.operations || []).join(', ')],
  ];
}

function flatten(object, prefix = '') {
  const out = [];
  for (const [key, value] of Object.entries(object || {})) {
    const name = prefix ? `${prefix} · ${key}` : key;
    if (value !== null && typeof value === 'object' && !Array.isArray(value))
      out.push(...flatten(value, name));
    else out.push([name, Array.isArray(value) ? JSON.stringify(value) : value]);
  }
  return out;
}

async function renderCard() {
  const meta = state.meta;
  const epoch = state.epoch;
  $('card-facts').replaceChildren(
    ...factRows(meta)
      .map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])
      .flat(),
  );

  const scores = Object.entries((meta.anomaly && meta.anomaly.scores) || {});
  fill(
    $('card-thresholds'),
    scores.length === 0
      ? h('p', { class: 'hint', text: 'No calibrated thresholds.' })
      : h(
          'div',
          { class: 'table-wrap' },
          h(
            'table',
            {},
            h(
              'thead',
              {},
              h(
                'tr',
                {},
                ['Score', 'Threshold', 'Percentile', 'Items', 'Mean', 'Std'].map((t) =>
                  h('th', { scope: 'col', text: t }),
                ),
              ),
            ),
            h(
              'tbody',
              {},
              scores.map(([name, c]) =>
                h(
                  'tr',
                  {},
                  h('td', {
                    text: name === meta.anomaly.default_score ? `${name} (default)` : name,
                  }),
                  h('td', { text: fmt(c.threshold) }),
                  h('td', { text: fmt(c.percentile) }),
                  h('td', { text: String(c.n_samples) }),
                  h('td', { text: fmt(c.mean) }),
                  h('td', { text: fmt(c.std) }),
                ),
              ),
            ),
          ),
        ),
    meta.anomaly && meta.anomaly.calibrated_on
      ? h('p', {
          class: 'hint',
          text: `Calibrated on: ${JSON.stringify(meta.anomaly.calibrated_on)}`,
        })
      : null,
  );

  const metrics = flatten(meta.metrics);
  $('card-metrics').replaceChildren(
    metrics.length === 0
      ? h('p', { class: 'hint', text: 'No held-out metrics in this bundle.' })
      : h(
          'div',
          { class: 'table-wrap', id: 'metrics-table' },
          h(
            'table',
            {},
            h(
              'tbody',
              {},
              metrics.map(([k, v]) =>
                h('tr', {}, h('th', { scope: 'row', text: k }), h('td', { text: fmt(v) })),
              ),
            ),
          ),
        ),
  );

  const report = $('card-report');
  report.setAttribute('aria-busy', 'true');
  report.replaceChildren(h('p', { class: 'hint', text: 'Loading the report…' }));
  try {
    const listing = await getJson(modelPath('report'));
    if (epoch !== state.epoch) return;
    const plots = listing.files.filter((f) => f.media_type.startsWith('image/'));
    if (plots.length === 0) {
      report.replaceChildren(
        h('p', {
          class: 'hint',
          text: 'This bundle has no report plots (vae-train writes them to report/ beside the model; the container image leaves them out).',
        }),
      );
    } else {
      // Fetched with the API key and shown from blob: URLs; a plain <img src> could not send it.
      report.replaceChildren(
        ...plots.map((file) => {
          const img = h('img', {
            alt: file.description || file.name,
            loading: 'lazy',
            dataset: { file: file.name },
          });
          loadPlot(img, file.url);
          return h(
            'figure',
            {},
            img,
            h(
              'figcaption',
              {},
              h('strong', { text: file.name }),
              file.description ? `: ${file.description}` : '',
            ),
          );
        }),
      );
    }
    state.rendered.card = epoch;
  } catch (error) {
    report.replaceChildren(
      h('p', { class: 'hint', text: `The report could not be loaded: ${error.message}` }),
    );
  } finally {
    report.removeAttribute('aria-busy');
  }
}

async function loadPlot(img, url) {
  try {
    const blob = await (await request(url.replace(/^\//, ''))).blob();
    const src = URL.createObjectURL(blob);
    state.blobUrls.push(src);
    img.src = src;
  } catch (error) {
    img.alt = `${img.alt} (could not be loaded: ${error.message})`;
  }
}

// ------------------------------------------------------------------ monitoring

function svg(tag, attributes = {}) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString();

function verdictTile(id, title, verdict, detail) {
  // verdict: true (alarm), false (calm) or null (not judged)
  const label = verdict === null ? 'No verdict yet' : verdict ? 'Alarm' : 'Calm';
  const kind = verdict === null ? 'none' : verdict ? 'bad' : 'ok';
  return h(
    'div',
    { class: `verdict-tile ${kind}`, id: `verdict-${id}`, dataset: { state: kind } },
    h('h3', { text: title }),
    h('p', { class: 'verdict-state', text: label }),
    h('p', { class: 'hint', text: detail }),
  );
}

function monitorVerdicts(report) {
  const rate = report.anomaly_rate_test;
  const score = report.score_drift;
  const input = report.input_drift;
  const moved = input
    ? [...(input.features || []), ...(input.dimensions || [])].filter((c) => c.drifted)
    : [];
  return [
    verdictTile(
      'anomaly-rate',
      'Anomaly rate',
      rate ? rate.alert : null,
      report.anomaly_rate === null
        ? `The threshold promises ${percent(report.expected_anomaly_rate)} of normal items.`
        : `${percent(report.anomaly_rate)} flagged (${rate.flagged} items) where the threshold ` +
            `promises ${percent(report.expected_anomaly_rate)}; p = ${fmt(rate.p_value, 3)}.`,
    ),
    verdictTile(
      'score-drift',
      'Score drift',
      score ? score.drifted : null,
      score
        ? `Kolmogorov-Smirnov D = ${fmt(score.statistic, 3)} against the reference; ` +
            `p = ${fmt(score.p_value, 3)}.`
        : 'Needs a reference and enough items.',
    ),
    verdictTile(
      'input-drift',
      'Input drift',
      input ? input.drifted : null,
      input
        ? moved.length
          ? `Moved: ${moved.slice(0, 3).map(columnName).join(', ')}.`
          : 'No latent dimension or feature moved.'
        : 'Needs a reference and enough items.',
    ),
  ];
}

function columnName(column) {
  if ('feature' in column)
    return column.name ? `${column.name} (feature ${column.feature})` : `feature ${column.feature}`;
  return `latent dimension ${column.dimension}`;
}

function scoreHistogram(picture, scoreType) {
  const width = 560;
  const height = 220;
  const pad = { left: 8, right: 8, top: 10, bottom: 34 };
  const bins = picture.live.length;
  const edges = picture.edges;
  const span = edges[bins] - edges[0];
  const top = Math.max(...picture.live, ...picture.reference) || 1;
  const x = (value) => pad.left + ((value - edges[0]) / span) * (width - pad.left - pad.right);
  const y = (share) => height - pad.bottom - (share / top) * (height - pad.top - pad.bottom);
  const mean = (shares) =>
    shares.reduce((sum, share, i) => sum + (share * (edges[i] + edges[i + 1])) / 2, 0);
  const summary =
    `Histogram of ${scoreType} scores: the window's above the threshold ` +
    `${percent(1 - sumBelow(picture, 'live'))}, the reference's ` +
    `${percent(1 - sumBelow(picture, 'reference'))}; ` +
    `binned means ${fmt(mean(picture.live), 3)} and ${fmt(mean(picture.reference), 3)}.`;
  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': summary,
    id: 'monitor-histogram-svg',
  });
  // The window filled, the reference in outline over it: both stay readable where they overlap.
  for (const [side, shares] of [
    ['live', picture.live],
    ['reference', picture.reference],
  ]) {
    shares.forEach((share, i) => {
      if (share <= 0) return;
      root.append(
        svg('rect', {
          class: `bin ${side}`,
          x: x(edges[i]) + 0.5,
          y: y(share),
          width: Math.max(x(edges[i + 1]) - x(edges[i]) - 1, 1),
          height: y(0) - y(share),
        }),
      );
    });
  }
  root.append(
    svg('line', { class: 'axis', x1: x(edges[0]), x2: x(edges[bins]), y1: y(0), y2: y(0) }),
  );
  const t = x(picture.threshold);
  root.append(svg('line', { class: 'threshold-line', x1: t, x2: t, y1: pad.top, y2: y(0) }));
  const labels = [
    [x(edges[0]), 'start', fmt(edges[0], 3)],
    [x(edges[bins]), 'end', fmt(edges[bins], 3)],
    [t, 'middle', `threshold ${fmt(picture.threshold, 3)}`],
  ];
  for (const [at, anchor, text] of labels) {
    const label = svg('text', { x: at, y: height - 12, 'text-anchor': anchor, class: 'tick' });
    label.textContent = text;
    root.append(label);
  }
  const outside = [];
  if (picture.above.live > 0 || picture.above.reference > 0)
    outside.push(
      `beyond the right edge: ${percent(picture.above.live)} of the window, ` +
        `${percent(picture.above.reference)} of the reference`,
    );
  if (picture.below.live > 0)
    outside.push(`below the left edge: ${percent(picture.below.live)} of the window`);
  return [
    root,
    outside.length ? h('p', { class: 'hint', text: `Not drawn, ${outside.join('; ')}.` }) : null,
  ];
}

// The share of one side's scores at or below the threshold, from the bins (approximate within
// the threshold's bin, exact enough for a summary read aloud).
function sumBelow(picture, side) {
  const edges = picture.edges;
  let total = picture.below[side];
  picture[side].forEach((share, i) => {
    if (edges[i + 1] <= picture.threshold) total += share;
    else if (edges[i] < picture.threshold)
      total += (share * (picture.threshold - edges[i])) / (edges[i + 1] - edges[i]);
  });
  return total;
}

function movedTable(input) {
  const columns = [...(input.features || []), ...(input.dimensions || [])];
  return h(
    'div',
    { class: 'table-wrap', id: 'monitor-moved-table' },
    h(
      'table',
      {},
      h(
        'caption',
        { class: 'hint' },
        'The most moved columns first; p-values Holm-corrected within each family.',
      ),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Column', 'KS statistic', 'p', 'Mean shift (SD)', 'Drifted'].map((t) =>
            h('th', { scope: 'col', text: t }),
          ),
        ),
      ),
      h(
        'tbody',
        {},
        columns.map((c) =>
          h(
            'tr',
            { class: c.drifted ? 'anomalous' : null },
            h('td', { text: columnName(c) }),
            h('td', { text: fmt(c.statistic, 3) }),
            h('td', { text: fmt(c.p_value, 3) }),
            h('td', { text: `${c.mean_shift_in_sd >= 0 ? '+' : ''}${fmt(c.mean_shift_in_sd, 3)}` }),
            h('td', { text: c.drifted ? 'yes' : 'no' }),
          ),
        ),
      ),
    ),
  );
}

function periodsTable(periods) {
  const name = (seconds) =>
    seconds % 3600 === 0 ? `last ${seconds / 3600} h` : `last ${seconds / 60} min`;
  return h(
    'table',
    { id: 'monitor-periods-table' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ['Period', 'Items', 'Anomaly rate', 'Alarm'].map((t) => h('th', { scope: 'col', text: t })),
      ),
    ),
    h(
      'tbody',
      {},
      periods.map((p) =>
        h(
          'tr',
          { class: p.anomaly_rate_test && p.anomaly_rate_test.alert ? 'anomalous' : null },
          h('td', { text: name(p.seconds) + (p.complete ? '' : ' (older items forgotten)') }),
          h('td', { text: String(p.items) }),
          h('td', { text: p.anomaly_rate === null ? '–' : percent(p.anomaly_rate) }),
          h('td', {
            text: p.anomaly_rate_test
              ? p.anomaly_rate_test.alert
                ? 'yes'
                : 'no'
              : 'too few items',
          }),
        ),
      ),
    ),
  );
}

function feedbackFacts(feedback) {
  if (!feedback)
    return h('p', {
      class: 'hint',
      text:
        'No labels yet. POST labels for earlier answers (by their X-Request-ID) to ' +
        `/models/${state.name}/feedback to see precision, recall and false alarms here.`,
    });
  const ratio = (value) => (value === null ? '–' : percent(value));
  const facts = [
    ['Labelled items', String(feedback.n)],
    ['Precision', ratio(feedback.precision)],
    ['Recall', ratio(feedback.recall)],
    ['False-alarm rate', ratio(feedback.false_alarm_rate)],
  ];
  return h(
    'dl',
    { class: 'facts', id: 'monitor-feedback-facts' },
    facts.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })]),
  );
}

async function renderMonitor() {
  const epoch = state.epoch;
  let report;
  try {
    report = await getJson(modelPath('monitoring'));
  } catch (error) {
    if (epoch !== state.epoch) return;
    const off = error.status === 409;
    if (off) stopMonitorTimer();
    $('monitor-window').textContent = off
      ? `Monitoring is off on this service: ${error.message}.`
      : `The monitoring report could not be loaded: ${error.message}`;
    for (const id of ['monitor-verdicts', 'monitor-missing', 'monitor-histogram', 'monitor-moved'])
      $(id).replaceChildren();
    return;
  }
  if (epoch !== state.epoch) return;
  state.rendered.monitor = epoch;
  const window = report.window;
  // When the newest item judged was scored: a full window's count stays put as it slides.
  $('monitor-window').dataset.to = window.items ? String(window.to) : '';
  $('monitor-window').textContent =
    `${window.items} of the last ${window.size} scored items (every worker's)` +
    (window.items ? `, ${clock(window.from)} to ${clock(window.to)}` : '') +
    `. Each verdict is a test at level ${report.alpha}: on traffic like the reference, ` +
    `it sounds an alarm at most that often.`;
  fill($('monitor-verdicts'), monitorVerdicts(report));
  fill(
    $('monitor-missing'),
    (report.missing || []).map((text) => h('li', { text })),
  );
  const picture = report.score_histogram;
  $('monitor-legend').hidden = !picture;
  fill(
    $('monitor-histogram'),
    picture
      ? scoreHistogram(picture, report.score_type)
      : h('p', {
          class: 'hint',
          text: 'Drawn once the window holds scored items and the bundle a reference.',
        }),
  );
  fill(
    $('monitor-moved'),
    report.input_drift
      ? movedTable(report.input_drift)
      : h('p', { class: 'hint', text: 'Nothing to compare yet.' }),
  );
  fill($('monitor-periods'), periodsTable(report.time_windows || []));
  fill($('monitor-feedback'), feedbackFacts(report.feedback));
}

const refreshMonitor = coalesced(renderMonitor);

function startMonitorTimer() {
  stopMonitorTimer();
  if (!$('monitor-live').checked) return;
  state.monitorTimer = setInterval(() => {
    if (!document.hidden) refreshMonitor();
  }, MONITOR_REFRESH_MS);
}

function stopMonitorTimer() {
  if (state.monitorTimer !== null) clearInterval(state.monitorTimer);
  state.monitorTimer = null;
}

// ------------------------------------------------------------------ tabs

const TABS = ['score', 'samples', 'walk', 'monitor', 'card'];

function visibleTabs() {
  return TABS.filter((tab) => !$(`tab-${tab}`).hidden);
}

function showTab(tab, focus = false) {
  if ($(`tab-${tab}`).hidden) tab = 'score';
  state.tab = tab;
  for (const other of TABS) {
    const button = $(`tab-${other}`);
    const selected = other === tab;
    button.setAttribute('aria-selected', String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`panel-${other}`).hidden = !selected;
  }
  if (focus) $(`tab-${tab}`).focus();
  writeHash();
  if (tab !== 'monitor') stopMonitorTimer();
  if (!state.meta) return;
  if (tab === 'monitor') {
    refreshMonitor();
    startMonitorTimer();
  }
  if (tab === 'samples' && state.rendered.samples !== state.epoch) refreshSamples();
  if (tab === 'walk' && state.rendered.walk !== state.epoch && state.variational) walk();
  if (tab === 'card' && state.rendered.card !== state.epoch) renderCard();
}

function setUpTabs() {
  for (const tab of TABS) $(`tab-${tab}`).addEventListener('click', () => showTab(tab));
  // The WAI-ARIA tabs pattern: arrows move between tabs, Home/End to the ends.
  $('tabs').addEventListener('keydown', (event) => {
    const tabs = visibleTabs();
    const at = tabs.indexOf(state.tab);
    const next = {
      ArrowRight: tabs[(at + 1) % tabs.length],
      ArrowLeft: tabs[(at - 1 + tabs.length) % tabs.length],
      Home: tabs[0],
      End: tabs[tabs.length - 1],
    }[event.key];
    if (next) {
      event.preventDefault();
      showTab(next, true);
    }
  });
}

// ------------------------------------------------------------------ models

function writeHash() {
  if (!state.name) return;
  const params = new URLSearchParams({ model: state.name, version: state.version, tab: state.tab });
  history.replaceState(null, '', `#${params}`);
}

function readHash() {
  return new URLSearchParams(location.hash.slice(1));
}

async function loadModels() {
  clearAlert();
  let listing;
  for (;;) {
    try {
      listing = await getJson('models');
      break;
    } catch (error) {
      if (error instanceof ApiError && error.status === 503) {
        say('The service is still loading its models…');
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      fail(error);
      return;
    }
  }
  state.models = listing.models;
  state.defaultModel = listing.default_model;
  const select = $('model-select');
  select.replaceChildren(
    ...state.models.map((m) =>
      h('option', {
        value: m.name,
        text: `${m.name}${m.name === state.defaultModel ? ' (default)' : ''}`,
      }),
    ),
  );
  select.disabled = false;
  const wanted = readHash();
  const name = state.models.some((m) => m.name === wanted.get('model'))
    ? wanted.get('model')
    : state.defaultModel || (state.models[0] && state.models[0].name);
  if (!name) {
    fail(new Error('The service serves no models.'));
    return;
  }
  state.tab = TABS.includes(wanted.get('tab')) ? wanted.get('tab') : 'score';
  await selectModel(name, wanted.get('version'));
}

async function selectModel(name, version) {
  const entry = state.models.find((m) => m.name === name);
  const versions = entry.versions || [entry.version];
  const chosen = versions.includes(version) ? version : entry.version;
  $('model-select').value = name;
  const versionSelect = $('version-select');
  versionSelect.replaceChildren(
    ...versions.map((v) =>
      h('option', { value: v, text: v === entry.version ? `${v} (served)` : v }),
    ),
  );
  versionSelect.value = chosen;
  versionSelect.disabled = versions.length < 2;
  try {
    const meta =
      chosen === entry.version
        ? entry
        : await getJson(
            `models/${encodeURIComponent(name)}/versions/${encodeURIComponent(chosen)}`,
          );
    setModel(meta);
    clearAlert();
  } catch (error) {
    fail(error);
  }
}

function describe(meta) {
  const parts = [`${meta.name} version ${meta.version}`, meta.kind.toUpperCase().replace('_', ' ')];
  if (state.image) {
    const { C, H, W } = state.image;
    parts.push(
      `${C === 1 ? 'greyscale' : `${C}-channel`} ${W}×${H} images, values ${fmt(state.range.low[0])} to ${fmt(state.range.high[0])}${state.range.assumed ? ' (assumed: the metadata gives no range)' : ''}`,
    );
  } else {
    parts.push(`rows of ${meta.input.feature_count} features`);
  }
  parts.push(`${meta.latent_dim} latent dimensions`);
  const def = meta.anomaly && meta.anomaly.default_score;
  if (def && meta.anomaly.scores[def])
    parts.push(`anomaly threshold ${fmt(meta.anomaly.scores[def].threshold)} (${def})`);
  return parts.join(' · ');
}

function setModel(meta) {
  state.epoch += 1;
  state.meta = meta;
  state.name = meta.name;
  state.version = meta.version;
  state.variational = (meta.operations || []).includes('sample');
  const shape = meta.input.image_shape;
  state.image = shape
    ? { C: shape[0], H: shape[1], W: shape[2], D: shape[0] * shape[1] * shape[2] }
    : null;
  state.range = meta.value_range
    ? { low: meta.value_range.low, high: meta.value_range.high, assumed: false }
    : { low: [0], high: [1], assumed: true };
  for (const url of state.blobUrls) URL.revokeObjectURL(url);
  state.blobUrls = [];

  $('model-summary').textContent = describe(meta);
  $('image-score').hidden = !state.image;
  $('table-score').hidden = Boolean(state.image);
  $('tab-samples').hidden = !state.variational;
  $('tab-walk').hidden = !state.image;
  $('pick-hint').hidden = !state.image;
  $('sample-input').hidden = !state.variational;
  $('generate-row').hidden = !state.variational;

  const scoreTypes = Object.keys((meta.anomaly && meta.anomaly.scores) || {});
  for (const id of ['score-type', 'row-score-type']) {
    const select = $(id);
    select.replaceChildren(...scoreTypes.map((s) => h('option', { value: s, text: s })));
    select.value = meta.anomaly.default_score;
  }

  $('samples').replaceChildren();
  $('card-report').replaceChildren();
  $('row-results').replaceChildren();
  if (state.image) {
    $('fit-ink').checked = true;
    $('invert').checked = false;
    resetPad();
    clearResults();
    resetWalk();
    $('input-size').textContent = `(${state.image.W}×${state.image.H})`;
  } else {
    $('feature-count-label').textContent = `${meta.input.feature_count} numbers`;
  }
  say(`Model ${meta.name} version ${meta.version} ready.`);
  showTab(state.tab);
}

// ------------------------------------------------------------------ the API key box

function setUpKeyBox() {
  const describeKey = () => {
    $('key-state').textContent = apiKey()
      ? 'A key is set for this tab; every call sends it.'
      : 'No key set. Needed only when the service runs with VAE_API_KEYS.';
  };
  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('api-key').value.trim();
    try {
      sessionStorage.setItem(KEY_STORAGE, key);
    } catch {
      fail(new Error('This browser does not allow storing the key for the tab.'));
      return;
    }
    $('api-key').value = '';
    describeKey();
    $('key-box').open = false;
    loadModels();
  });
  $('forget-key').addEventListener('click', () => {
    try {
      sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // nothing stored
    }
    describeKey();
  });
  describeKey();
}

// ------------------------------------------------------------------ wiring

function setUp() {
  setUpKeyBox();
  setUpTabs();
  setUpPad();
  $('model-select').addEventListener('change', (event) => selectModel(event.target.value, null));
  $('version-select').addEventListener('change', (event) =>
    selectModel(state.name, event.target.value),
  );

  $('upload').addEventListener('change', async (event) => {
    const file = event.target.files[0];
    event.target.value = ''; // the same file again still fires change
    if (!file || !state.image) return;
    try {
      await loadUpload(file);
      say(`Loaded ${file.name}.`);
      analyse();
    } catch (error) {
      fail(error);
    }
  });
  $('clear-pad').addEventListener('click', () => {
    $('fit-ink').checked = true;
    resetPad();
    clearResults();
  });
  $('noise-pad').addEventListener('click', () => {
    addNoise();
    analyse();
  });
  $('sample-input').addEventListener('click', useGeneratedSample);
  $('fit-ink').addEventListener('change', () => analyse());
  $('invert').addEventListener('change', () => analyse());
  $('score-type').addEventListener('change', () => analyse());

  $('score-rows').addEventListener('click', scoreRows);
  $('generate-row').addEventListener('click', addGeneratedRow);
  $('clear-rows').addEventListener('click', () => {
    $('rows').value = '';
    $('row-results').replaceChildren();
  });
  $('csv-upload').addEventListener('change', async (event) => {
    const file = event.target.files[0];
    event.target.value = '';
    if (!file) return;
    $('rows').value = await file.text();
    scoreRows();
  });

  $('temperature').addEventListener('input', () => {
    $('temperature-value').textContent = Number($('temperature').value).toFixed(2);
    refreshSamples();
  });
  $('seed').addEventListener('change', refreshSamples);
  $('sample-count').addEventListener('change', refreshSamples);
  $('new-seed').addEventListener('click', () => {
    $('seed').value = String(randomSeed());
    refreshSamples();
  });

  for (const end of ['a', 'b']) {
    $(`end-${end}`)
      .querySelector('.take-input')
      .addEventListener('click', () => takeSnapshot(end));
  }
  $('walk-steps').addEventListener('input', () => {
    $('walk-steps-value').textContent = $('walk-steps').value;
  });
  $('walk').addEventListener('click', walk);

  $('monitor-refresh').addEventListener('click', refreshMonitor);
  $('monitor-live').addEventListener('change', () => {
    if (state.tab === 'monitor') startMonitorTimer();
  });

  loadModels();
}

setUp();
