mod devcache;
mod hostile;
mod ops;
mod proxy;
mod store;
