export * from './format.js';
export * from './loader.js';
