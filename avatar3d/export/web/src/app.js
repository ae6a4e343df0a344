// avatar3d web player: a linear-bake Gaussian avatar rendered with Spark on three.js.
// Per frame the page uploads K weights (a tiny texture); a Spark object modifier (GLSL, on the GPU)
// adds sum_k w_k B_k to every moving splat. The audio element is the clock.
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { SparkRenderer, SplatMesh, dyno } from "@sparkjsdev/spark";

const q = new URLSearchParams(location.search);
const status = (s) => { const el = document.getElementById("status"); if (el) el.textContent = s; };

async function fetchBin(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.arrayBuffer();
}

// OpenCV intrinsics (K, image size) -> an OpenGL projection matrix (near n, far f).
function projectionFromK(K, w, h, n = 0.01, f = 100) {
  const [fx, cx, fy, cy] = [K[0][0], K[0][2], K[1][1], K[1][2]];
  return new THREE.Matrix4().set(
    2 * fx / w, 0, (w - 2 * cx) / w, 0,
    0, 2 * fy / h, (2 * cy - h) / h, 0,
    0, 0, -(f + n) / (f - n), -2 * f * n / (f - n),
    0, 0, -1, 0);
}

// The avatar's world is OpenCV head space (y down, z away from the frontal camera); the scene is
// three.js (y up): root = rotation by pi about x, so a world point X sits at diag(1,-1,-1) X.
const FLIP = new THREE.Vector3(1, -1, -1);
function cvToScene(v) { return new THREE.Vector3(v[0] * FLIP.x, v[1] * FLIP.y, v[2] * FLIP.z); }

// Place a three.js camera at an OpenCV world_to_camera pose.
function setCameraFromCv(camera, w2c) {
  const R = [0, 1, 2].map((i) => w2c[i].slice(0, 3));
  const t = [0, 1, 2].map((i) => w2c[i][3]);
  const c = [0, 1, 2].map((j) => -(R[0][j] * t[0] + R[1][j] * t[1] + R[2][j] * t[2]));
  const fwd = cvToScene(R[2]);
  camera.position.copy(cvToScene(c));
  camera.up.copy(cvToScene(R[1]).negate());
  camera.lookAt(camera.position.clone().add(fwd));
}

function orbitW2c(scene, yawDeg) {
  // the capture camera turned by yaw about the head's vertical axis through the world origin
  const w2c = scene.capture.world_to_camera;
  const a = yawDeg * Math.PI / 180;
  const Ry = [[Math.cos(a), 0, -Math.sin(a)], [0, 1, 0], [Math.sin(a), 0, Math.cos(a)]];
  const out = w2c.map((r) => r.slice());
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) {
    out[i][j] = w2c[i][0] * Ry[0][j] + w2c[i][1] * Ry[1][j] + w2c[i][2] * Ry[2][j];
  }
  return out;
}

function blendModifier(scene, basisTex, weightsTex) {
  const { k, n_moving: nm, texels_per_basis: s, basis_width: bw } = scene;
  const rot = s === 3;
  const basis = dyno.dynoSampler2D(basisTex, "basisTex");
  const weights = dyno.dynoSampler2D(weightsTex, "weightsTex");
  return dyno.dynoBlock({ gsplat: dyno.Gsplat }, { gsplat: dyno.Gsplat }, ({ gsplat }) => {
    const d = new dyno.Dyno({
      inTypes: { gsplat: dyno.Gsplat, basis: "sampler2D", weights: "sampler2D" },
      outTypes: { gsplat: dyno.Gsplat },
      statements: ({ inputs, outputs }) => dyno.unindentLines(`
        ${outputs.gsplat} = ${inputs.gsplat};
        int gi = ${inputs.gsplat}.index;
        if (gi < ${nm}) {
          vec3 dp = vec3(0.0); vec4 dq = vec4(0.0); vec3 ds = vec3(0.0);
          for (int kk = 0; kk < ${k}; kk++) {
            float w = texelFetch(${inputs.weights}, ivec2(kk >> 2, 0), 0)[kk & 3];
            int a = (gi * ${k} + kk) * ${s};
            vec4 t0 = texelFetch(${inputs.basis}, ivec2(a % ${bw}, a / ${bw}), 0);
            dp += w * t0.xyz;
            ${rot ? `ds.x += w * t0.w;
            vec4 t1 = texelFetch(${inputs.basis}, ivec2((a + 1) % ${bw}, (a + 1) / ${bw}), 0);
            vec4 t2 = texelFetch(${inputs.basis}, ivec2((a + 2) % ${bw}, (a + 2) / ${bw}), 0);
            dq += w * t1; ds.yz += w * t2.xy;` : ""}
          }
          ${outputs.gsplat}.center += dp;
          ${rot ? `${outputs.gsplat}.quaternion = normalize(${inputs.gsplat}.quaternion + dq);
          ${outputs.gsplat}.scales *= exp(ds);` : ""}
        }
      `),
    });
    return { gsplat: d.apply({ gsplat, basis, weights }).gsplat };
  });
}

function vrButton(renderer) {
  const b = document.getElementById("vr");
  b.textContent = "Enter VR";
  if (!("xr" in navigator)) { b.disabled = true; b.title = "WebXR is not available in this browser"; return; }
  navigator.xr.isSessionSupported("immersive-vr").then((ok) => {
    b.disabled = !ok;
    if (!ok) b.title = "no VR headset found (open this page in the headset's browser)";
  }).catch(() => { b.disabled = true; });
  let session = null;
  b.onclick = async () => {
    if (session) { await session.end(); return; }
    session = await navigator.xr.requestSession("immersive-vr", { optionalFeatures: ["local-floor"] });
    session.addEventListener("end", () => { session = null; b.textContent = "Enter VR"; });
    await renderer.xr.setSession(session);
    b.textContent = "Exit VR";
  };
}

async function main() {
  const scene3 = new THREE.Scene();
  const sc = await (await fetch("scene.json")).json();
  const [basisBuf, weightsBuf] = await Promise.all([fetchBin(sc.basis), fetchBin(sc.weights)]);
  const weights = new Float32Array(weightsBuf);
  const cap = sc.capture;
  const fixedFrame = q.has("frame") ? Math.max(0, Math.min(sc.frames - 1, parseInt(q.get("frame"), 10) || 0)) : null;
  const view = q.get("camera") || "orbit";
  const yaw = parseFloat(q.get("yaw") || "0");

  const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
  renderer.setPixelRatio(1);
  const [W, H] = view === "capture" ? [cap.width, cap.height] : [window.innerWidth, window.innerHeight];
  renderer.setSize(W, H);
  renderer.setClearColor(new THREE.Color().fromArray(sc.background));
  renderer.xr.enabled = true;
  document.getElementById("view").appendChild(renderer.domElement);

  const spark = new SparkRenderer({ renderer, preBlurAmount: 0.3, maxStdDev: 3.33, sortRadial: false,
                                    minAlpha: 1.0 / 255.0 });
  scene3.add(spark);

  const camera = new THREE.PerspectiveCamera(30, W / H, 0.01, 100);
  const root = new THREE.Group();
  root.quaternion.set(1, 0, 0, 0);  // pi about x: OpenCV -> three.js
  scene3.add(root);

  const basisTex = new THREE.DataTexture(new Uint16Array(basisBuf), sc.basis_width, sc.basis_height,
                                         THREE.RGBAFormat, THREE.HalfFloatType);
  basisTex.needsUpdate = true;
  const wdata = new Float32Array(Math.ceil(sc.k / 4) * 4);
  const weightsTex = new THREE.DataTexture(wdata, Math.ceil(sc.k / 4), 1, THREE.RGBAFormat, THREE.FloatType);
  weightsTex.needsUpdate = true;

  const mesh = new SplatMesh({ url: sc.splats, extSplats: true });
  await mesh.initialized;
  mesh.objectModifier = blendModifier(sc, basisTex, weightsTex);
  mesh.updateGenerator();
  root.add(mesh);

  const controls = new OrbitControls(camera, renderer.domElement);  // (its constructor aims the camera)
  const w2c = yaw ? orbitW2c(sc, yaw) : cap.world_to_camera;
  setCameraFromCv(camera, w2c);
  camera.projectionMatrix.copy(projectionFromK(cap.K, cap.width, cap.height));
  camera.projectionMatrixInverse.copy(camera.projectionMatrix).invert();
  // orbit about the point on the optical axis at the head's depth, so the first view is the capture's
  const fwd = new THREE.Vector3();
  camera.getWorldDirection(fwd);
  const head = cvToScene(sc.target);
  controls.target.copy(camera.position).addScaledVector(fwd, head.clone().sub(camera.position).dot(fwd));
  controls.enabled = view !== "capture";
  if (controls.enabled) controls.update();

  if (q.get("ui") === "0") document.getElementById("ui").style.display = "none";
  const audio = document.getElementById("audio");
  audio.src = sc.audio;
  vrButton(renderer);

  // live mode (avatar3d serve): weights arrive over a WebSocket as [uint32 frame][K float32]
  let liveFrame = -1;
  if (q.has("live")) {
    const ws = new WebSocket(q.get("live"));
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => {
      liveFrame = new DataView(ev.data).getUint32(0, true);
      wdata.set(new Float32Array(ev.data.slice(4, 4 + 4 * sc.k)));
      weightsTex.needsUpdate = true;
      mesh.updateVersion();
    };
    ws.onclose = () => status("live stream closed");
  }
  let last = -1, drawn = 0, fpsT0 = 0, fpsN = 0;
  window.avatar3d = { frames: 0, fps: 0, frame: -1 };
  renderer.xr.addEventListener("sessionstart", () => { root.position.set(0, 1.6, -0.75); });
  renderer.xr.addEventListener("sessionend", () => { root.position.set(0, 0, 0); });
  renderer.setAnimationLoop((time) => {
    const f = q.has("live") ? liveFrame
      : fixedFrame !== null ? fixedFrame : Math.min(sc.frames - 1, Math.floor(audio.currentTime * sc.fps));
    if (f !== last && !q.has("live")) {
      wdata.set(weights.subarray(f * sc.k, (f + 1) * sc.k));
      weightsTex.needsUpdate = true;
      mesh.updateVersion();
    }
    last = f;
    if (controls.enabled) controls.update();
    renderer.render(scene3, camera);
    drawn++;
    if (!fpsT0) fpsT0 = time;
    fpsN++;
    if (time - fpsT0 > 1000) { window.avatar3d.fps = fpsN * 1000 / (time - fpsT0); fpsT0 = time; fpsN = 0; }
    window.avatar3d.frames = drawn;
    window.avatar3d.frame = f;
    if (drawn === 30) document.title = `avatar3d ready frame=${f}`;
  });
  status(`${sc.n_splats} splats, K=${sc.k}, ${sc.frames} frames at ${sc.fps} fps`);
}

main().catch((e) => { console.error(e); status(`error: ${e.message}`); document.title = `avatar3d error: ${e.message}`; });
