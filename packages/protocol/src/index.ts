export * from './uid.js';
export * from './frame.js';
export * from './rpc.js';
export * from './signal.js';
export * from './endpoint.js';
export * from './config.js';
export * from './controller-messages.js';
export * from './social-config.js';
