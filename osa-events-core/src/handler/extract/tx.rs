//! [`CallTx`]: the store transaction of one handler call or projection batch, which the `Tx`
//! extractor of the `osa-events` crate wraps.
//!
//! The runtime opens the transaction, lends it to the handler, and takes it back when the handler
//! returns, to complete the deliveries in it and commit. The handler gives it back by dropping its
//! `Tx` (it has, once its future completed, unless it moved the `Tx` somewhere that outlives the
//! call); a transaction that never comes back is dropped, which rolls it back.

use std::fmt;

use tokio::sync::oneshot;

use crate::store::Transaction;

/// The store transaction a handler call writes through, lent by the runtime (see the `Tx`
/// extractor of `osa-events`, which wraps it).
pub struct CallTx {
    tx: Option<Box<dyn Transaction>>,
    back: Option<oneshot::Sender<Box<dyn Transaction>>>,
}

/// The runtime's side of a [`CallTx`]: where the transaction comes back when the handler drops it.
#[derive(Debug)]
pub(crate) struct TxSlot {
    back: oneshot::Receiver<Box<dyn Transaction>>,
}

impl fmt::Debug for dyn Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}

impl TxSlot {
    /// A `CallTx` for the handler, and the slot its transaction returns to.
    pub(crate) fn new(tx: Box<dyn Transaction>) -> (CallTx, TxSlot) {
        let (sender, receiver) = oneshot::channel();
        let handle = CallTx {
            tx: Some(tx),
            back: Some(sender),
        };
        (handle, TxSlot { back: receiver })
    }

    /// The transaction, if the handler has let go of it.
    pub(crate) fn take_back(mut self) -> Option<Box<dyn Transaction>> {
        self.back.try_recv().ok()
    }
}

impl CallTx {
    /// A `CallTx` with no transaction: what a second `Tx` parameter of one handler gets.
    pub fn absent() -> Self {
        Self {
            tx: None,
            back: None,
        }
    }

    /// The transaction.
    ///
    /// # Panics
    ///
    /// When this is a second `Tx` of one handler, which has none.
    pub fn transaction(&mut self) -> &mut dyn Transaction {
        self.tx
            .as_deref_mut()
            .expect("this `Tx` has no transaction: a handler can take only one `Tx` parameter")
    }

    /// The transaction, shared.
    ///
    /// # Panics
    ///
    /// As for [`transaction`](Self::transaction).
    pub fn transaction_ref(&self) -> &dyn Transaction {
        self.tx
            .as_deref()
            .expect("this `Tx` has no transaction: a handler can take only one `Tx` parameter")
    }
}

impl Drop for CallTx {
    fn drop(&mut self) {
        if let (Some(tx), Some(back)) = (self.tx.take(), self.back.take()) {
            // The runtime may have given up on the call (timeout, shutdown): then the send fails
            // and dropping the transaction rolls it back, which is what we want.
            let _ = back.send(tx);
        }
    }
}

impl fmt::Debug for CallTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallTx")
            .field("open", &self.tx.is_some())
            .finish()
    }
}
