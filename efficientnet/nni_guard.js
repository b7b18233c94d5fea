'use strict';
/*
 * Fixes for NNI 3.0's manager (the Node.js process behind nnictl and the WebUI), preloaded into it with
 * `node --require` by `python -m efficientnet create|resume|view` (efficientnet/launcher.py sets NODE_OPTIONS).
 * NNI is archived upstream, so every workaround of its manager lives in this one file:
 *
 *   1. bind     The REST server (WebUI, REST API, trial and tuner channels) listens on loopback, not on every
 *               interface: EFFICIENTNET_NNI_BIND lists the addresses (first one: the server itself; the others:
 *               plain TCP forwarders to it). "0.0.0.0" or "::" keeps NNI's listen-everywhere behaviour.
 *   2. pairing  Each trial gets the parameters NNI recorded for it. NNI 3.0's v3 compat layer queues parameters
 *               first come, first served (training_service/v3/compat.js: parameters.push, then shift() on any
 *               trial's request), so trials started together could train each other's proposals.
 *   3. files    GET /trial-file/<trial>/<name> serves files inside the trial's folder only (NNI joins the
 *               URL-decoded name to the folder, so "..%2F" walked out of it).
 *   4. errors   A tuner error that the dispatcher reports (command "ER") becomes the experiment's error message,
 *               instead of NNI's generic "Dispatcher stream error, tuner may have crashed.".
 *   5. gpus     A trial may ask for every GPU of the machine: NNI's GPU scheduler refuses `gpuNumber >= gpus.length`
 *               (common/trial_keeper/task_scheduler/scheduler.js), so with one GPU and trialGpuNumber 1 no trial
 *               ever started, and nnimanager.log repeated "Only have 1 GPUs, requesting 1". And a trial that waits
 *               for a GPU waits: NNI asked again at once (training_service/v3/compat.js, `while (trialId === null)`)
 *               in a loop that never yielded, so the manager stopped answering and, once its GPU information was
 *               10 s old, started a GPU-information process on every turn until memory ran out. One such process
 *               runs at a time (collect_info.js started one per call while another was still running), and a
 *               shared GPU (maxTrialNumberPerGpu > 1) that no trial may use now is a wait, not a TypeError.
 *   6. tuner    The tuner (NNI's dispatcher, a Python process that imports torch) may take as long as it needs to
 *               connect while its process lives: NNI gave it 10 s (core/tuner_command_channel.js, TunerServer.init),
 *               then ended the experiment in ERROR ("Tuner did not connect in 10 seconds"), which a loaded machine
 *               reaches. The wait ends at once when that process ends, with a line saying so, and after
 *               TUNER_CONNECT_S at most. Meanwhile a command for the tuner (nnictl update, or a stop) waits for the
 *               connection, or ends the tuner's process for a stop, where NNI threw a TypeError (no channel yet).
 *
 * What was applied is written to <experiment>/log/efficientnet_guard.json (and to nnictl_stderr.log), so the
 * launcher and the tests see at once when a future NNI no longer has what is patched here.
 */

const fs = require('fs');
const net = require('net');
const path = require('path');
const Module = require('module');

const MAIN = process.argv[1] || '';
const NNI_NODE = path.dirname(MAIN);

function arg(name) {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : undefined;
}

function install() {
    const status = {
        version: 1,
        pid: process.pid,
        bind: (process.env.EFFICIENTNET_NNI_BIND || '127.0.0.1,::1').split(',').map(s => s.trim()).filter(Boolean),
        listening: [],
        patched: {bind: true, pairing: false, files: false, errors: false, gpus: false, gpuInfo: false,
                  tuner: false, tunerPid: false},
        problems: [],
    };
    const statusFile = statusPath();
    const save = () => {
        if (!statusFile) return;
        try {
            fs.mkdirSync(path.dirname(statusFile), {recursive: true});
            fs.writeFileSync(statusFile + '.tmp', JSON.stringify(status, null, 2) + '\n');
            fs.renameSync(statusFile + '.tmp', statusFile);
        } catch (error) {
            say(`cannot write ${statusFile}: ${error.message}`);
        }
    };
    const problem = (what) => {
        status.problems.push(what);
        say(`NOT APPLIED: ${what}`);
        save();
    };
    process.env.EFFICIENTNET_NNI_GUARD = '1';  // the dispatcher (the tuner's process) inherits it
    patchListen(status, save);
    const patchers = {
        'training_service/v3/compat.js': exports => patchPairing(exports, status, problem),
        'core/nnimanager.js': exports => patchManager(exports, status, problem),
        'common/trial_keeper/task_scheduler/scheduler.js': exports => patchScheduler(exports, status),
        'common/trial_keeper/task_scheduler/collect_info.js': exports => patchGpuInfo(exports, status),
        'core/tuner_command_channel.js': exports => patchTunerStart(exports, status, {log: dispatcherLogPath()}),
    };
    const load = Module._load;
    Module._load = function (request, parent, isMain) {
        const exports = load.apply(this, arguments);
        if (exports && !exports.__efficientnetPatched && parent && typeof request === 'string'
            && /(compat|nnimanager|scheduler|collect_info|tuner_command_channel)$/.test(request)) {
            let file;
            try {
                file = path.relative(NNI_NODE, Module._resolveFilename(request, parent, isMain)).split(path.sep).join('/');
            } catch (error) {
                file = undefined;
            }
            if (file in patchers) {
                Object.defineProperty(exports, '__efficientnetPatched', {value: true});
                try {
                    patchers[file](exports);
                } catch (error) {
                    problem(`${file}: ${error.message}`);
                }
                save();
            }
        }
        return exports;
    };
    save();
    say(`bind ${status.bind.join(', ')}; trial parameters paired by trial; trial files confined to their folder; `
        + 'a trial may ask for every GPU; the tuner may take its time to connect');
}

function statusPath() {
    const dir = arg('experiments-directory');
    const id = arg('experiment-id');
    return dir && id ? path.join(dir, id, 'log', 'efficientnet_guard.json') : undefined;
}

function dispatcherLogPath() {
    const status = statusPath();
    return status ? path.join(path.dirname(status), 'dispatcher.log') : 'dispatcher.log';
}

function say(message) {
    process.stderr.write(`efficientnet-nni guard: ${message}\n`);
}

function expect(cond, what) {
    if (!cond) throw new Error(`${what} is not what this guard was written for (NNI 3.0); the fix is not applied`);
}

// ------------------------------------------------------------------------------------------------ 1. bind
const ANY = new Set(['0.0.0.0', '::', '*']);

function patchListen(status, save) {
    const listen = net.Server.prototype.listen;
    const [primary, ...extra] = status.bind;
    if (!primary || ANY.has(primary)) return;  // opted out: NNI's own behaviour
    net.Server.prototype.listen = function (...args) {
        const first = args[0];
        const isPort = typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first));
        let changed = false;
        if (isPort && (args.length === 1 || typeof args[1] === 'function' || args[1] === undefined)) {
            args.splice(1, args.length > 1 && args[1] === undefined ? 1 : 0, primary);
            changed = true;
        } else if (first && typeof first === 'object' && first.port !== undefined && first.host === undefined
                   && first.path === undefined && !(first instanceof net.Server)) {
            args[0] = {...first, host: primary};
            changed = true;
        }
        if (changed) {
            this.once('listening', () => {
                const port = this.address().port;
                status.listening.push(`${primary}:${port}`);
                save();
                for (const address of extra) forward(this, listen, address, primary, port, status, save);
            });
        }
        return listen.apply(this, args);
    };
}

/** A plain TCP forwarder on address:port to the real server on primary:port (WebSockets included). */
function forward(server, listen, address, primary, port, status, save) {
    const relay = net.createServer(socket => {
        const upstream = net.connect(port, primary);
        socket.pipe(upstream).pipe(socket);
        socket.on('error', () => upstream.destroy());
        upstream.on('error', () => socket.destroy());
    });
    relay.on('error', error => {
        if (address === '::1') return;  // a machine without IPv6 loopback: 127.0.0.1 serves alone
        const what = `listen ${address}:${port}: ${error.code || error.message}`;
        say(what);
        status.problems.push(what);
        save();
    });
    relay.on('listening', () => {
        status.listening.push(`${address}:${port}`);
        save();
    });
    server.on('close', () => relay.close());
    listen.call(relay, port, address);
}

// ------------------------------------------------------------------------------------------------ 2. pairing
function patchPairing(exports, status, problem) {
    const V3asV1 = exports.V3asV1;
    expect(V3asV1 && typeof V3asV1.prototype.start === 'function'
             && typeof V3asV1.prototype.submitTrialJob === 'function', 'training_service/v3/compat.js V3asV1');
    const start = V3asV1.prototype.start;
    V3asV1.prototype.start = function () {
        const ts = this;
        const v3 = this.v3;
        try {
            expect(Array.isArray(ts.parameters) && ts.allocatedParameters instanceof Map && ts.trialJobs
                     && v3 && typeof v3.onRequestParameter === 'function' && typeof v3.sendParameter === 'function',
                     'V3asV1 instance (parameters, allocatedParameters, trialJobs, v3)');
        } catch (error) {
            problem(error.message);
            return start.apply(this, arguments);
        }
        const register = v3.onRequestParameter;
        v3.onRequestParameter = function (fifo) {
            return register.call(v3, async trialId => {
                const value = await recordedParameters(ts, trialId);
                const index = value === undefined ? -1 : ts.parameters.indexOf(value);
                if (index < 0) {  // a resumed trial (NNI pairs those itself) or one NNI never recorded
                    if (value !== undefined) say(`trial ${trialId}: its parameters are not queued; NNI's order is used`);
                    return fifo(trialId);
                }
                ts.parameters.splice(index, 1);
                await v3.sendParameter(trialId, value);
            });
        };
        return start.apply(this, arguments);
    };
    status.patched.pairing = true;
}

/** The parameters NNI recorded for trialId (submitTrialJob records them once createTrial has returned). */
async function recordedParameters(ts, trialId, timeoutMs = 60000) {
    if (ts.allocatedParameters.has(trialId)) return undefined;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const trial = ts.trialJobs[trialId];
        const form = trial && trial.form;
        const value = form && form.hyperParameters && form.hyperParameters.value;
        if (typeof value === 'string' && form.sequenceId >= 0) return value;
        if (Date.now() > deadline) return undefined;
        await new Promise(resolve => setTimeout(resolve, 20));
    }
}

// ------------------------------------------------------------------------------------------------ 3. files, 4. errors
const TRIAL_ID = /^[A-Za-z0-9_-]{1,64}$/;
const GENERIC_DISPATCHER_ERROR = 'Dispatcher stream error, tuner may have crashed.';

/** Why a trial-file request is refused, or undefined when it names a file inside the trial's folder. */
function trialFileProblem(trialId, fileName) {
    if (typeof trialId !== 'string' || !TRIAL_ID.test(trialId)) return `no trial ${JSON.stringify(trialId)}`;
    if (typeof fileName !== 'string' || !fileName || fileName.includes('\0') || fileName.includes('\\')) {
        return `bad file name ${JSON.stringify(fileName)}`;
    }
    const normal = path.posix.normalize(fileName);
    if (path.posix.isAbsolute(normal) || normal === '..' || normal.startsWith('../')) {
        return `${JSON.stringify(fileName)} is outside the trial's folder`;
    }
    return undefined;
}

function patchManager(exports, status, problem) {
    const NNIManager = exports.NNIManager;
    expect(NNIManager && typeof NNIManager.prototype.getTrialFile === 'function', 'core/nnimanager.js NNIManager');
    const errors = require(path.join(NNI_NODE, 'common', 'errors'));
    const getTrialFile = NNIManager.prototype.getTrialFile;
    NNIManager.prototype.getTrialFile = async function (trialJobId, fileName) {
        const refused = trialFileProblem(trialJobId, fileName);
        if (refused !== undefined) {
            say(`trial-file refused: ${refused}`);
            throw new errors.NNIError(errors.NNIErrorNames.NOT_FOUND, `trial-file: ${refused}`);
        }
        return getTrialFile.call(this, trialJobId, fileName);
    };
    status.patched.files = true;

    const addEventListeners = NNIManager.prototype.addEventListeners;
    if (typeof addEventListeners !== 'function') {
        problem('core/nnimanager.js NNIManager.addEventListeners is missing: tuner errors keep NNI\'s generic message');
        return;
    }
    NNIManager.prototype.addEventListeners = function () {
        const result = addEventListeners.apply(this, arguments);
        if (this.dispatcher && typeof this.dispatcher.onError === 'function' && this.status
            && Array.isArray(this.status.errors)) {
            this.dispatcher.onError(error => {  // runs after NNI's own listener, which pushed the generic line
                const lines = String(error && error.message || '').split('\n').map(s => s.trim()).filter(Boolean);
                if (!lines.length) return;
                const line = `tuner error: ${lines[lines.length - 1]}`;
                const at = this.status.errors.lastIndexOf(GENERIC_DISPATCHER_ERROR);
                if (at >= 0) this.status.errors[at] = line; else this.status.errors.push(line);
            });
        }
        return result;
    };
    status.patched.errors = true;

    const setupTuner = NNIManager.prototype.setupTuner;
    if (typeof setupTuner !== 'function') {
        problem('core/nnimanager.js NNIManager.setupTuner is missing: a tuner that dies at start is seen only after '
                + `${TUNER_CONNECT_S} s`);
        return;
    }
    NNIManager.prototype.setupTuner = async function () {
        const result = await setupTuner.apply(this, arguments);
        if (this.dispatcher && this.dispatcherPid > 0) watchDispatcher(this.dispatcher, this.dispatcherPid);
        return result;
    };
    status.patched.tunerPid = true;
}

// ------------------------------------------------------------------------------------------------ 5. gpus
const GPU_RETRY_MS = 1000;  // a trial that cannot have its GPUs yet asks again after this long

function patchScheduler(exports, status) {
    const TaskScheduler = exports.TaskScheduler;
    expect(TaskScheduler
             && ['schedule', 'sortGpus', 'update'].every(m => typeof TaskScheduler.prototype[m] === 'function'),
           'common/trial_keeper/task_scheduler/scheduler.js TaskScheduler');
    const schedule = TaskScheduler.prototype.schedule;
    const pause = () => new Promise(resolve => setTimeout(resolve, GPU_RETRY_MS));
    TaskScheduler.prototype.schedule = async function () {  // NNI asks again at once after a refusal or an error
        try {
            const scheduled = await scheduleEvery.apply(this, arguments);
            if (scheduled === null) await pause();
            return scheduled;
        } catch (error) {
            await pause();
            throw error;
        }
    };

    function scheduleEvery(experimentId, trialId, gpuNumber, restrictions) {
        if (gpuNumber > 0 && gpuNumber < 1 && this.sortGpus(restrictions ?? {}).length === 0) {
            // NNI's shared-GPU branch reads gpus[0] of this empty list (every GPU active, say) and throws
            this.update();  // as NNI's schedule does first: the GPUs' state is read again for the next ask
            return null;
        }
        const all = Array.isArray(this.gpus) && Array.isArray(this.trials) && gpuNumber === this.gpus.length;
        if (!(gpuNumber >= 1 && all)) return schedule.apply(this, arguments);
        // NNI's own branch for whole GPUs, which its `gpuNumber >= this.gpus.length` test never lets a trial reach
        // when it asks for all of them
        this.update();
        const gpus = this.sortGpus(restrictions ?? {});
        const n = Math.round(gpuNumber);
        if (gpus.length < n || gpus[n - 1].util > 0) return null;
        const indices = gpus.slice(0, n).map(gpu => {
            gpu.util = 1;
            this.trials.push({gpuIndex: gpu.index, experimentId, trialId, util: 1});
            return gpu.index;
        });
        return {'CUDA_VISIBLE_DEVICES': indices.sort((a, b) => a - b).join(',')};
    }
    status.patched.gpus = true;
}

/** NNI's collectGpuInfo, one collector process at a time: a call while one runs gets that one's answer. */
function patchGpuInfo(exports, status) {
    const collect = exports.collectGpuInfo;
    expect(typeof collect === 'function', 'common/trial_keeper/task_scheduler/collect_info.js collectGpuInfo');
    let running = null;
    exports.collectGpuInfo = function () {
        if (running === null) running = collect.apply(this, arguments).finally(() => { running = null; });
        return running;
    };
    status.patched.gpuInfo = true;
}

// ------------------------------------------------------------------------------------------------ 6. tuner
const TUNER_CONNECT_S = 300;  // the longest the tuner's process may take to connect while it lives
const dispatcherPids = new WeakMap();  // NNI's tuner server -> the pid of the dispatcher process NNI started for it
const stoppedEarly = new WeakSet();  // tuner servers whose experiment was stopped before the tuner connected

/** Tell the tuner server's wait which process is the tuner (NNI's setupTuner started it). */
function watchDispatcher(server, pid) {
    dispatcherPids.set(server, pid);
}

function processLives(pid) {
    try {
        process.kill(pid, 0);
        return true;
    } catch (error) {
        return error.code === 'EPERM';
    }
}

/** ``pid`` and the processes under it (Linux's /proc; elsewhere ``pid`` alone). */
function processTree(pid) {
    const tree = [pid];
    for (let i = 0; i < tree.length; i++) {
        try {
            const children = fs.readFileSync(`/proc/${tree[i]}/task/${tree[i]}/children`, 'utf8');
            tree.push(...children.split(/\s+/).filter(Boolean).map(Number));
        } catch (error) { /* not Linux, or already gone */ }
    }
    return tree;
}

/**
 * NNI's TunerServer until the tuner connects. init waits while the tuner's process lives (NNI: 10 s). A command
 * for the tuner before it connects (NNI: a TypeError, since there is no channel yet) waits for the connection, in
 * order, after the manager's own first commands; TERMINATE (a stop) ends the tuner's process instead, which has
 * nothing to save yet (NNI starts it through a shell: both end), so NNI's stop does not fail half-way and leave it.
 */
function patchTunerStart(exports, status, {log = 'dispatcher.log', limitS = TUNER_CONNECT_S, pollMs = 200} = {}) {
    const server = typeof exports.getTunerServer === 'function' ? exports.getTunerServer() : undefined;
    const proto = server && Object.getPrototypeOf(server);
    expect(proto && typeof proto.init === 'function' && typeof proto.sendCommand === 'function' && server.connect
           && 'settled' in server.connect && typeof server.connect.reject === 'function',
           'core/tuner_command_channel.js TunerServer');
    proto.init = function () {
        if (this.connect.settled) return this.connect.promise;
        const started = Date.now();
        const timer = setInterval(() => {
            if (this.connect.settled || stoppedEarly.has(this)) {  // connected, or stopped by the user meanwhile
                clearInterval(timer);
                return;
            }
            const pid = dispatcherPids.get(this);
            let why;
            if (pid !== undefined && !processLives(pid)) {
                why = `the tuner's process (NNI's dispatcher) ended before it connected: its error is in ${log}`;
            } else if (Date.now() - started >= limitS * 1000) {
                why = `the tuner did not connect in ${limitS} s, though its process runs: see ${log}`;
            }
            if (why !== undefined) {
                clearInterval(timer);
                this.connect.reject(new Error(`tuner_command_channel: ${why}`));
            }
        }, pollMs);
        return this.connect.promise;
    };
    const sendCommand = proto.sendCommand;
    proto.sendCommand = function (commandType, content) {
        if (this.channel !== undefined || commandType === 'PI') return sendCommand.apply(this, arguments);
        if (commandType === 'TE') {
            stoppedEarly.add(this);
            const pid = dispatcherPids.get(this);
            if (pid !== undefined) {
                for (const each of processTree(pid)) {  // NNI's shell first (so it cannot go on), then Python
                    try {
                        process.kill(each, 'SIGTERM');
                    } catch (error) { /* already gone */ }
                }
            }
            say('stopped before the tuner connected: its process is ended');
            return;
        }
        this.connect.promise.then(() => sendCommand.call(this, commandType, content), () => undefined);
    };
    status.patched.tuner = true;
}

// NODE_OPTIONS reaches every Node process started from this environment: act only in NNI's manager
if (path.basename(MAIN) === 'main.js' && path.basename(NNI_NODE) === 'nni_node' && !global.__efficientnetGuard) {
    global.__efficientnetGuard = true;
    install();
}

module.exports = {trialFileProblem, recordedParameters, patchScheduler, patchGpuInfo, patchTunerStart,
                  watchDispatcher};
