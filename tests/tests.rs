mod ops;
mod store;
