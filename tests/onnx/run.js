#!/usr/bin/env node
// Runs an ONNX model exported by `xray-dp export` in onnxruntime (npm onnxruntime-node) on binary PGM
// images already at the model's input size: x = pixel / 255, [N, 1, H, W]; one batch of all images.
// Prints one line per image: path<TAB>p0<TAB>p1... (the "probability" output, 9 significant digits),
// then the model's metadata_props as "#meta KEY<TAB>VALUE" lines when --meta is given.
// Usage: NODE_PATH=DIR/node_modules node tests/onnx/run.js MODEL.onnx IMG.pgm...
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function readPgm(path) {
  const b = fs.readFileSync(path);
  // header: P5 W H MAXVAL, whitespace separated, then one whitespace byte and the pixels
  let pos = 0;
  const tok = [];
  while (tok.length < 4) {
    while (/\s/.test(String.fromCharCode(b[pos]))) pos++;
    if (b[pos] === 0x23) { while (b[pos] !== 0x0a) pos++; continue; }
    let s = '';
    while (!/\s/.test(String.fromCharCode(b[pos]))) s += String.fromCharCode(b[pos++]);
    tok.push(s);
  }
  pos++;
  if (tok[0] !== 'P5' || tok[3] !== '255') throw new Error(`${path}: not an 8-bit binary PGM`);
  const w = +tok[1], h = +tok[2];
  return { w, h, px: b.subarray(pos, pos + w * h) };
}

async function main() {
  const [model, ...imgs] = process.argv.slice(2);
  const sess = await ort.InferenceSession.create(model);
  if (sess.inputNames.join() !== 'image' || sess.outputNames.join() !== 'probability')
    throw new Error(`${model}: inputs ${sess.inputNames} outputs ${sess.outputNames}`);
  const ims = imgs.map(readPgm);
  const { w, h } = ims[0];
  const x = new Float32Array(ims.length * w * h);
  ims.forEach((im, i) => {
    if (im.w !== w || im.h !== h) throw new Error(`${imgs[i]}: size differs`);
    for (let j = 0; j < w * h; j++) x[i * w * h + j] = im.px[j] / 255;
  });
  const out = await sess.run({ image: new ort.Tensor('float32', x, [ims.length, 1, h, w]) });
  const p = out.probability;
  const k = p.dims[1];
  if (p.dims[0] !== ims.length) throw new Error(`output dims ${p.dims}`);
  for (let i = 0; i < ims.length; i++) {
    const row = [];
    for (let j = 0; j < k; j++) row.push(p.data[i * k + j].toPrecision(9));
    console.log([imgs[i], ...row].join('\t'));
  }
}
main().catch((e) => { console.error(`run.js: ${e.message}`); process.exit(1); });
