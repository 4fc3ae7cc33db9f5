//===- Mpi.h - the MPI backend of the communicator ---------------*- C++ -*-===//
//
// Ranks of a job started by mpirun (Open MPI), talking through MPI's
// nonblocking collectives on MPI_COMM_WORLD. Errors come back as values
// (MPI_ERRORS_RETURN), never as a hang: a rank that cannot go on aborts
// the whole job with a message naming itself.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_COMM_MPI_H
#define DSV3_RUNTIME_COMM_MPI_H

#include "runtime/comm/Communicator.h"

namespace dsv3::rt {

/// Whether this build has the MPI backend.
bool mpiAvailable();

/// Whether this process was started by an MPI launcher (mpirun sets the
/// rank in the environment); without one, programs run as one process and
/// never initialise MPI.
bool launchedByMpi();

/// Initialises MPI (once per process) and returns the world communicator;
/// fails when the build has no MPI.
Expected<std::unique_ptr<Communicator>> mpiCommunicator(int &argc, char **&argv);

/// The MPI communicator under a launcher, else the one-process one.
Expected<std::unique_ptr<Communicator>> worldCommunicator(int &argc, char **&argv);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_COMM_MPI_H
