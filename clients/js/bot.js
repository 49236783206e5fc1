#!/usr/bin/env node
// BulletInBoard automatic client (bot).
//
// Logs in under a random name, then repeats the original bot's cycle (list users, create a
// channel, list channels, publish in an existing channel, send a private message) followed
// by the standard's loop (pick a channel, send it 10 messages). Every operation prints one
// line with its arguments, result and Lamport clock. Exit code 0 iff every operation
// succeeded. The wire contract is the project's PROTOCOL (service/data maps in MessagePack).
'use strict';

const crypto = require('crypto');
const { parseArgs } = require('util');
const zmq = require('zeromq');
const { encode, decode } = require('@msgpack/msgpack');

const CHANNELS = ['geral', 'noticias', 'tecnologia', 'esportes', 'games'];
const PHRASES = [
  'Olá a todos!',
  'Alguém por aqui?',
  'Mensagem automática de teste',
  'O sistema distribuído está funcionando',
  'Relógios sincronizados?',
  'Bom dia!',
  'Testando replicação',
  'Carga de teste em andamento',
];
const LOOP_MESSAGES = 10;

const USAGE = `usage: node bot.js [options]

  --broker ENDPOINT   broker frontend (env BROKER, default tcp://localhost:5555)
  --proxy ENDPOINT    proxy XPUB for publications (env PROXY, default tcp://localhost:5558)
  --name NAME         user name (default: random bot-xxxxxx)
  --interval SECONDS  pause between operations (default 3; 0 for load tests)
  --cycles N          stop after N cycles (default: run until SIGTERM/SIGINT)
  --timeout SECONDS   wait for each reply before retrying (default 2)
  --retries N         tries per request, same request id each time (default 3)
  -h, --help          show this help

Exit status: 0 if every operation succeeded, 1 if any failed, 2 on bad options.`;

function fail(message) {
  process.stderr.write(`bot: ${message}\n\n${USAGE}\n`);
  process.exit(2);
}

function number(value, option, { integer = false, min = 0, strict = false } = {}) {
  const n = Number(value);
  if (value === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n))
      || n < min || (strict && n === min)) {
    fail(`${option} needs a ${integer ? 'whole ' : ''}number ${strict ? '>' : '>='} ${min}, got "${value}"`);
  }
  return n;
}

// Same rule as the servers, so a bad --name fails here with a clear message.
function validName(name) {
  return name.length >= 1 && name.length <= 64 && name === name.trim()
    && !/[\u0000-\u001f\u007f]/.test(name) && name !== 'servers';
}

function parseOptions(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        broker: { type: 'string' },
        proxy: { type: 'string' },
        name: { type: 'string' },
        interval: { type: 'string' },
        cycles: { type: 'string' },
        timeout: { type: 'string' },
        retries: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    fail(err.message);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const name = values.name ?? `bot-${crypto.randomBytes(3).toString('hex')}`;
  if (!validName(name)) fail(`invalid --name "${name}"`);
  return {
    broker: values.broker || process.env.BROKER || 'tcp://localhost:5555',
    proxy: values.proxy || process.env.PROXY || 'tcp://localhost:5558',
    name,
    interval: values.interval === undefined ? 3 : number(values.interval, '--interval'),
    cycles: values.cycles === undefined ? Infinity
      : number(values.cycles, '--cycles', { integer: true, min: 0, strict: true }),
    timeout: values.timeout === undefined ? 2
      : number(values.timeout, '--timeout', { min: 0, strict: true }),
    retries: values.retries === undefined ? 3
      : number(values.retries, '--retries', { integer: true, min: 1 }),
  };
}

class LamportClock {
  constructor() { this.value = 0; }

  tick() { this.value += 1; return this.value; }

  // A missing or odd clock counts as 0, as the servers treat ours.
  merge(received) {
    const n = typeof received === 'bigint' ? Number(received) : received;
    if (Number.isInteger(n) && n > this.value) this.value = n;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const pick = (list) => list[Math.floor(Math.random() * list.length)];
const show = (value) => (typeof value === 'string' ? JSON.stringify(value) : String(value));

function showList(list) {
  const shown = list.slice(0, 10).map(show).join(', ');
  return `[${shown}${list.length > 10 ? `, ... +${list.length - 10}` : ''}] (${list.length})`;
}

class Bot {
  constructor(opts) {
    this.opts = opts;
    this.clock = new LamportClock();
    this.req = null;
    this.sub = null;
    this.topics = new Set();
    this.failures = 0;
    this.operations = 0;
    this.closed = false;
  }

  log(line) {
    process.stdout.write(`${new Date().toISOString()} ${this.opts.name} ${line}\n`);
  }

  openRequest() {
    // linger 0: a request abandoned by a retry must not keep the process alive at exit.
    this.req = new zmq.Request({ linger: 0, receiveTimeout: this.opts.timeout * 1000 });
    this.req.connect(this.opts.broker);
  }

  // Lazy pirate: a REQ socket that missed its reply is stuck, so close it, open a fresh one
  // and resend under the same id; the servers apply a write with a given id only once.
  async request(service, fields) {
    const id = `${this.opts.name}-${crypto.randomUUID()}`;
    let lastError = null;
    for (let attempt = 1; attempt <= this.opts.retries; attempt += 1) {
      if (this.closed) throw new Error('bot is shutting down');
      if (!this.req) this.openRequest();
      const data = { ...fields, timestamp: Date.now() / 1000, clock: this.clock.tick(), id };
      let frame;
      try {
        await this.req.send(encode({ service, data }));
        [frame] = await this.req.receive();
      } catch (err) {
        if (this.closed) throw new Error('bot is shutting down');
        lastError = err.code === 'EAGAIN' ? `no reply within ${this.opts.timeout}s` : err.message;
        this.log(`clock=${this.clock.value} ${service} try ${attempt}/${this.opts.retries} failed: ${lastError}`);
        this.req.close();
        this.req = null;
        continue;
      }
      const reply = decode(frame);
      if (reply === null || typeof reply !== 'object' || typeof reply.data !== 'object'
          || reply.data === null) {
        throw new Error('reply is not a {service, data} map');
      }
      this.clock.merge(reply.data.clock);
      if (reply.service !== service) {
        const why = reply.data.description || reply.data.message || '';
        throw new Error(`reply for service "${reply.service}" ${why}`.trim());
      }
      return reply.data;
    }
    throw new Error(`${lastError} (gave up after ${this.opts.retries} tries)`);
  }

  // Runs one operation: check(data) returns [ok, summary]. Never throws.
  async operation(service, fields, describe, check) {
    this.operations += 1;
    let ok = false;
    let summary;
    let data = null;
    try {
      data = await this.request(service, fields);
      [ok, summary] = check(data);
    } catch (err) {
      summary = `FAILED (${err.message})`;
    }
    if (!ok) this.failures += 1;
    this.log(`clock=${this.clock.value} ${service}(${describe}) -> ${summary}`);
    return ok ? data : null;
  }

  static statusCheck(word, errorField) {
    return (data) => (data.status === word
      ? [true, word]
      : [false, `FAILED ${show(data.status)}: ${data[errorField] ?? 'no reason given'}`]);
  }

  static listCheck(field) {
    return (data) => (Array.isArray(data[field])
      ? [true, showList(data[field])]
      : [false, `FAILED: reply has no "${field}" list`]);
  }

  login() {
    const { name } = this.opts;
    return this.operation('login', { user: name }, `user=${show(name)}`,
      Bot.statusCheck('sucesso', 'description'));
  }

  async users() {
    const data = await this.operation('users', {}, '', Bot.listCheck('users'));
    return data ? data.users.filter((u) => typeof u === 'string') : [];
  }

  async channels() {
    const data = await this.operation('channels', {}, '', Bot.listCheck('channels'));
    return data ? data.channels.filter((c) => typeof c === 'string') : [];
  }

  createChannel(channel) {
    // Bots pick from five names, so "already exists" is the usual answer, not a failure.
    return this.operation('channel', { channel }, `channel=${show(channel)}`, (data) => {
      if (data.status === 'sucesso') return [true, 'sucesso'];
      if (data.status === 'erro' && /already exist|já existe/i.test(String(data.description ?? ''))) {
        return [true, `erro (expected: ${data.description})`];
      }
      return [false, `FAILED ${show(data.status)}: ${data.description ?? 'no reason given'}`];
    });
  }

  publish(channel, message) {
    this.follow(channel);
    return this.operation('publish', { user: this.opts.name, channel, message },
      `channel=${show(channel)}, message=${show(message)}`, Bot.statusCheck('OK', 'message'));
  }

  privateMessage(dst, message) {
    return this.operation('message', { src: this.opts.name, dst, message },
      `dst=${show(dst)}, message=${show(message)}`, Bot.statusCheck('OK', 'message'));
  }

  follow(topic) {
    if (this.topics.has(topic)) return;
    this.topics.add(topic);
    this.sub.subscribe(topic);
  }

  async listen() {
    try {
      for await (const frames of this.sub) {
        if (frames.length !== 2) continue;
        const topic = frames[0].toString('utf8');
        // Subscriptions match prefixes ("ana" also gets "anabela"): only exact topics count.
        if (!this.topics.has(topic)) continue;
        let event;
        try {
          event = decode(frames[1]);
        } catch (err) {
          this.log(`clock=${this.clock.value} received undecodable publication on ${show(topic)}`);
          continue;
        }
        if (event === null || typeof event !== 'object') continue;
        this.clock.merge(event.clock);
        if (event.service === 'message') {
          this.log(`clock=${this.clock.value} received private message from ${show(event.src ?? event.user)}: ${show(event.message)}`);
        } else if (event.service === 'publish') {
          this.log(`clock=${this.clock.value} received post in ${show(event.channel ?? topic)} from ${show(event.user)}: ${show(event.message)}`);
        }
      }
    } catch (err) {
      if (!this.closed) this.log(`subscriber stopped: ${err.message}`);
    }
  }

  async pause() {
    if (this.opts.interval > 0) await sleep(this.opts.interval * 1000);
  }

  message(n) {
    return `${pick(PHRASES)} (${this.opts.name} #${n})`;
  }

  async cycle(n) {
    const users = await this.users();
    await this.pause();
    const created = pick(CHANNELS);
    await this.createChannel(created);
    await this.pause();
    const channels = await this.channels();
    await this.pause();
    await this.publish(channels.length ? pick(channels) : created, this.message(`${n}.0`));
    await this.pause();
    const others = users.filter((u) => u !== this.opts.name);
    // Alone on the board: write to itself, so the operation still runs every cycle.
    await this.privateMessage(others.length ? pick(others) : this.opts.name, this.message(`${n}.pm`));
    await this.pause();
    const loopChannel = channels.length ? pick(channels) : created;
    for (let i = 1; i <= LOOP_MESSAGES; i += 1) {
      await this.publish(loopChannel, this.message(`${n}.${i}`));
      await this.pause();
    }
  }

  async run() {
    this.sub = new zmq.Subscriber({ linger: 0 });
    this.sub.connect(this.opts.proxy);
    // Subscribe to our own name before logging in, so no private message is missed.
    this.follow(this.opts.name);
    this.listening = this.listen();
    this.log(`clock=${this.clock.value} start broker=${this.opts.broker} proxy=${this.opts.proxy} interval=${this.opts.interval}s cycles=${this.opts.cycles}`);

    // Without a login nothing else can succeed: stop early when running a fixed number of
    // cycles, keep trying when running as a service (the servers may still be starting).
    while (!(await this.login())) {
      if (this.opts.cycles !== Infinity) return this.finish();
      await sleep(Math.max(this.opts.interval, 1) * 1000);
    }
    await this.pause();
    for (let n = 1; n <= this.opts.cycles && !this.closed; n += 1) {
      await this.cycle(n);
    }
    return this.finish();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.req) this.req.close();
    if (this.sub) this.sub.close();
  }

  finish() {
    this.log(`clock=${this.clock.value} done: ${this.operations} operations, ${this.failures} failed`);
    this.close();
    return this.failures === 0 ? 0 : 1;
  }
}

function main() {
  const bot = new Bot(parseOptions(process.argv.slice(2)));
  const stop = (signal) => {
    bot.log(`clock=${bot.clock.value} ${signal}: stopping`);
    process.exit(bot.finish());
  };
  // As PID 1 in a container node gets no default signal handlers: install them explicitly.
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  bot.run().then((code) => process.exit(code), (err) => {
    process.stderr.write(`bot: ${err.stack || err}\n`);
    process.exit(1);
  });
}

main();
