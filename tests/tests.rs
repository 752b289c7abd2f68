mod mitm;
mod store;
