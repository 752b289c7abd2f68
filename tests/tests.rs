mod proxy;
mod stampede;
mod store;
