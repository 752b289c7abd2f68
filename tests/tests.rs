mod devcache;
mod hostile;
mod mitm;
mod ops;
mod proxy;
mod stampede;
mod store;
