export * from './format.js';
export * from './loader.js';
export * from './saev.js';
