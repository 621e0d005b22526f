"""Answers to the object-states assignment (tests/answers/__init__.py says how they are graded)."""

from answers import correct, wrong

ANSWERS = {
    "state-of": [
        correct(
            "loop-over-the-flags",
            '''
            def state_of(obj):
                state = inspect(obj)
                for name in ("transient", "pending", "persistent", "deleted", "detached"):
                    if getattr(state, name):
                        return name
            ''',
        ),
        correct(
            "one-expression",
            '''
            def state_of(obj):
                s = inspect(obj)
                return (
                    "deleted" if s.deleted
                    else "detached" if s.detached
                    else "persistent" if s.persistent
                    else "pending" if s.pending
                    else "transient"
                )
            ''',
        ),
        correct(
            "table-of-flags",
            '''
            from sqlalchemy import inspect as inspect_object


            def state_of(obj):
                state = inspect_object(obj)
                flags = {
                    "detached": state.detached,
                    "deleted": state.deleted,
                    "persistent": state.persistent,
                    "pending": state.pending,
                    "transient": state.transient,
                }
                return next(name for name, flag in flags.items() if flag)
            ''',
        ),
        wrong(
            "an-id-means-persistent",
            '''
            def state_of(obj):
                if inspect(obj).session is None:
                    return "transient" if obj.id is None else "detached"
                return "pending" if obj.id is None else "persistent"
            ''',
            "an object with an id in a session is persistent, even after its DELETE ran",
        ),
        wrong(
            "was-deleted-means-deleted",
            '''
            def state_of(obj):
                state = inspect(obj)
                if state.was_deleted:
                    return "deleted"
                if state.transient:
                    return "transient"
                if state.pending:
                    return "pending"
                if state.persistent:
                    return "persistent"
                return "detached"
            ''',
            "an object whose DELETE was committed is still deleted",
        ),
        wrong(
            "no-deleted-state",
            '''
            def state_of(obj):
                state = inspect(obj)
                if state.transient:
                    return "transient"
                if state.pending:
                    return "pending"
                if state.persistent:
                    return "persistent"
                return "detached"
            ''',
            "a deleted object has left the session at once",
        ),
        wrong(
            "flushes-first",
            '''
            def state_of(obj):
                state = inspect(obj)
                if state.session is not None:
                    state.session.flush()  # make sure the state is up to date
                for name in ("transient", "pending", "persistent", "deleted", "detached"):
                    if getattr(state, name):
                        return name
            ''',
            "looking at the state may change it",
        ),
        wrong(
            "the-visualizer-answers",
            '''
            from session_visualizer.snapshot import state_name


            def state_of(obj):
                return state_name(inspect(obj))
            ''',
            "the course's visualizer may answer for me (the grading sandbox cannot import it: "
            "state_of is never defined there)",
            total=5,
        ),
    ],
    "capitalise-name": [
        correct(
            "refresh-before-close",
            '''
            from sqlalchemy.orm.exc import DetachedInstanceError

            BROKEN_ERROR = DetachedInstanceError


            def capitalise_name(user_id):
                with Session(engine) as session:
                    user = session.get(User, user_id)
                    user.name = user.name.capitalize()
                    session.commit()
                    session.refresh(user)
                return user
            ''',
        ),
        correct(
            "read-before-close",
            '''
            import sqlalchemy.orm.exc

            BROKEN_ERROR = sqlalchemy.orm.exc.DetachedInstanceError


            def capitalise_name(user_id):
                session = Session(engine)
                try:
                    user = session.get(User, user_id)
                    user.name = user.name.capitalize()
                    session.commit()
                    user.name  # loads the expired attributes again, while the session is open
                    return user
                finally:
                    session.close()
            ''',
        ),
        correct(
            "sessionmaker-begin",
            '''
            from sqlalchemy.orm import exc, sessionmaker

            BROKEN_ERROR = exc.DetachedInstanceError
            Maker = sessionmaker(engine, expire_on_commit=False)


            def capitalise_name(user_id):
                with Maker.begin() as session:
                    user = session.get(User, user_id)
                    user.name = user.name.capitalize()
                return user
            ''',
        ),
        wrong(
            "never-closes",
            '''
            from sqlalchemy.orm.exc import DetachedInstanceError

            BROKEN_ERROR = DetachedInstanceError


            def capitalise_name(user_id):
                session = Session(engine)
                user = session.get(User, user_id)
                user.name = user.name.capitalize()
                session.commit()
                session.refresh(user)
                session.expunge(user)
                return user
            ''',
            "expunge() is as good as closing the session",
            keeps=2,
        ),
        wrong(
            "no-commit",
            '''
            from sqlalchemy.orm.exc import DetachedInstanceError

            BROKEN_ERROR = DetachedInstanceError


            def capitalise_name(user_id):
                with Session(engine) as session:
                    user = session.get(User, user_id)
                    user.name = user.name.capitalize()
                    session.flush()
                return user
            ''',
            "a flush saves the change",
        ),
        wrong(
            "returns-a-copy",
            '''
            from sqlalchemy.orm.exc import DetachedInstanceError

            BROKEN_ERROR = DetachedInstanceError


            def capitalise_name(user_id):
                with Session(engine) as session:
                    user = session.get(User, user_id)
                    user.name = user.name.capitalize()
                    session.commit()
                    return User(id=user.id, name=user.name)
            ''',
            "a new object with the same values is the same user",
            keeps=2,
        ),
        wrong(
            "the-error-by-name",
            '''
            BROKEN_ERROR = "DetachedInstanceError"


            def capitalise_name(user_id):
                with Session(engine, expire_on_commit=False) as session:
                    user = session.get(User, user_id)
                    user.name = user.name.capitalize()
                    session.commit()
                return user
            ''',
            "an exception's name is the exception",
            keeps=3,
        ),
    ],
}
